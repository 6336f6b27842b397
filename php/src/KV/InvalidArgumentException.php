<?php

declare(strict_types=1);

namespace Forkline\KV;

/*
 * A key that is not a non-empty string, or a ttl that is not null, an int or a DateInterval. A
 * PSR-16 InvalidArgumentException when psr/simple-cache is loadable.
 */
if (interface_exists(\Psr\SimpleCache\InvalidArgumentException::class)) {
    class InvalidArgumentException extends \InvalidArgumentException implements
        \Psr\SimpleCache\InvalidArgumentException
    {
    }
} else {
    class InvalidArgumentException extends \InvalidArgumentException
    {
    }
}
