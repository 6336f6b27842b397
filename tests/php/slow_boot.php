<?php

/**
 * Test worker: sleeps BOOT_MS milliseconds (default 1000) before entering the
 * worker loop, so the PID handshake is answered late. After booting it
 * serves the example application (php/app/worker.php).
 */

declare(strict_types=1);

$ms = getenv('BOOT_MS');
$ms = is_string($ms) && is_numeric($ms) ? max(0, (int) $ms) : 1000;
usleep($ms * 1000);

require __DIR__ . '/../../php/app/worker.php';
