<?php

/*
 * forkline worker for this app (server.command in .rr.yaml): boots Laravel once, then serves
 * requests over the relay until forkline stops it. See php/src/Laravel/Bridge.php.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';
require __DIR__ . '/bootstrap/autoload.php';

exit(Forkline\Laravel\Bridge::boot(__DIR__)->run());
