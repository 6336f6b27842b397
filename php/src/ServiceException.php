<?php

declare(strict_types=1);

namespace Forkline;

/**
 * The server answered the call with an error (the ERROR flag): unknown
 * method, unknown plugin, failed operation. The message has the same shape
 * as spiral/goridge's: "Error '<server text>' on tcp://host:port".
 */
class ServiceException extends RPCException
{
}
