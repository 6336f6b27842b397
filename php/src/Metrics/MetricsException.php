<?php

declare(strict_types=1);

namespace Forkline\Metrics;

/** A metrics.* call failed on the server; the message is the server's text. */
class MetricsException extends \RuntimeException
{
}
