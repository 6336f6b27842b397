<?php

declare(strict_types=1);

namespace Forkline;

/**
 * A task or response: context ("header" in the official PHP library) and body.
 *
 * On the wire (spec §4) it is one data frame with one option = strlen(context)
 * and payload = context . body. The constructor order (body first) follows
 * the official Spiral\RoadRunner\Payload.
 */
final class Payload
{
    public function __construct(
        public readonly string $body = '',
        public readonly string $context = '',
    ) {
    }

    public function isEmpty(): bool
    {
        return $this->body === '' && $this->context === '';
    }
}
