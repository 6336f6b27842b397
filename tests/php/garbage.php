<?php

/**
 * Test worker: completes the PID handshake, then on the first task writes
 * plain text to stdout instead of a frame (bypassing the output buffer, as a
 * misbehaving extension or a print before the worker started would).
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';

use Forkline\Worker;

$worker = Worker::create();
if ($worker->waitPayload() !== null) {
    $worker->relay()->sendRaw('hello world garbage');
    // keep the process alive; the server is expected to kill it
    while ($worker->waitPayload() !== null) {
        $worker->relay()->sendRaw('hello world garbage');
    }
}
exit(0);
