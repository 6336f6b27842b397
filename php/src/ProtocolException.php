<?php

declare(strict_types=1);

namespace Forkline;

/**
 * A frame or payload that violates the goridge / worker protocol
 * (bad header, bad CRC, bad options, undecodable control or context).
 */
class ProtocolException extends \RuntimeException
{
}
