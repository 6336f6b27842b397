<?php

/**
 * Test worker: reports the HTTP codec it detected on its first request
 * (spec §6.1): every response body is "json" or "proto", sent in that codec,
 * with the header X-Codec set to the same word.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';

use Forkline\HttpWorker;

$http = HttpWorker::create();
while (($req = $http->waitRequest()) !== null) {
    $codec = $http->codecName();
    $http->respond(200, $codec, ['Content-Type' => 'text/plain', 'X-Codec' => $codec]);
}
exit(0);
