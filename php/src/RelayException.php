<?php

declare(strict_types=1);

namespace Forkline;

/**
 * Transport failure on the relay: EOF, read/write error, connection failure.
 *
 * The code is CLOSED when the peer closed the relay cleanly on a frame
 * boundary (nothing of a frame had been read yet), 0 otherwise.
 */
class RelayException extends \RuntimeException
{
    public const CLOSED = 1;

    public function isClosed(): bool
    {
        return $this->getCode() === self::CLOSED;
    }
}
