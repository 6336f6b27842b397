<?php

/**
 * Test worker: completes the PID handshake normally, then answers every task
 * with a response frame whose header CRC is wrong (the server must treat it
 * as a fatal framing error and replace the worker).
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';

use Forkline\Frame;
use Forkline\Worker;

$worker = Worker::create();
while (($payload = $worker->waitPayload()) !== null) {
    $bytes = (new Frame('bad crc', [0], Frame::CODEC_PROTO))->encode();
    // flip every bit of the stored CRC (bytes 6..9)
    for ($i = 6; $i < 10; $i++) {
        $bytes[$i] = chr(ord($bytes[$i]) ^ 0xFF);
    }
    $worker->relay()->sendRaw($bytes);
}
exit(0);
