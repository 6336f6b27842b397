<?php

declare(strict_types=1);

namespace Forkline\KV;

/*
 * A kv call failed on the server (the storage, its driver, or the connection to Redis). It is a
 * PSR-16 CacheException when psr/simple-cache is loadable; the library does not need it.
 */
if (interface_exists(\Psr\SimpleCache\CacheException::class)) {
    class KVException extends \RuntimeException implements \Psr\SimpleCache\CacheException
    {
    }
} else {
    class KVException extends \RuntimeException
    {
    }
}
