<?php

declare(strict_types=1);

namespace Forkline;

/**
 * An RPC call that could not be completed: bad reply frame, sequence
 * mismatch, undecodable reply. Transport failures are RelayException.
 */
class RPCException extends \RuntimeException
{
}
