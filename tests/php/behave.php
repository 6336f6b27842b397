<?php

/**
 * Test worker whose behaviour is chosen by the request (tests/integration/test_pool.py).
 *
 *   /pid                  the worker pid
 *   /sleep?ms=N           sleeps N ms, then "slept N"
 *   /alloc?mb=N           allocates N MB and keeps it for the worker's life; answers the pid
 *   /exit?code=N          exit(N) mid-request
 *   /throw                throws: answered with an ERROR frame carrying the message
 *   /stderr?n=N&text=T    N lines "T i" on stderr, then "ok"
 *   /stderr-partial?text  T on stderr without a newline, then "ok"
 *   /flood?mb=N           N MB of lines on stderr, then "flooded"
 *   /stop[?pid=P]         answers the task with the worker's {"stop":true} frame (only in
 *                         worker P if given; other workers answer their pid)
 *   /garbage              writes plain text on stdout instead of a frame
 *   /env?name=X           getenv(X)
 *   /uid                  the real uid and gid of the process, "uid gid"
 *
 * Every task is appended as "pid path" to the file named by $EXEC_LOG, if set, so a test can
 * count executions. $BOOT_MS delays the PID handshake; while the file named by $BOOT_FAIL_IF
 * exists the worker dies at boot; $STOP_LINGER_MS delays its exit after a stop request.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';

use Forkline\HttpWorker;
use Forkline\RelayException;

$boot = getenv('BOOT_MS');
if (is_string($boot) && is_numeric($boot)) {
    usleep((int) $boot * 1000);
}

$fail = getenv('BOOT_FAIL_IF');
if (is_string($fail) && $fail !== '' && file_exists($fail)) {
    fwrite(STDERR, "behave.php: boot failure requested by $fail\n");
    exit(3);
}

$http = HttpWorker::create();
$log = getenv('EXEC_LOG');
$keep = [];
$text = ['Content-Type' => 'text/plain'];

while (true) {
    try {
        $req = $http->waitRequest();
    } catch (RelayException $e) {
        exit($e->isClosed() ? 0 : 1);
    }
    if ($req === null) {
        $linger = getenv('STOP_LINGER_MS');
        if (is_string($linger) && is_numeric($linger)) {
            usleep((int) $linger * 1000);
        }
        break;
    }
    $path = $req->path();
    $q = $req->query;
    $int = static fn (string $k, int $d): int => isset($q[$k]) && is_numeric($q[$k]) ? (int) $q[$k] : $d;
    if (is_string($log) && $log !== '') {
        file_put_contents($log, getmypid() . ' ' . $path . "\n", FILE_APPEND | LOCK_EX);
    }

    switch ($path) {
        case '/pid':
            $http->respond(200, (string) getmypid(), $text);
            break;

        case '/sleep':
            $ms = max(0, $int('ms', 0));
            usleep($ms * 1000);
            $http->respond(200, "slept $ms", $text);
            break;

        case '/alloc':
            $keep[] = str_repeat('x', max(0, $int('mb', 1)) * 1024 * 1024);
            $http->respond(200, (string) getmypid(), $text);
            break;

        case '/exit':
            exit($int('code', 1));

        case '/throw':
            $http->error('thrown by /throw in worker ' . getmypid());
            break;

        case '/stderr':
            $t = (string) ($q['text'] ?? 'line');
            for ($i = 1, $n = $int('n', 1); $i <= $n; $i++) {
                fwrite(STDERR, "$t $i\n");
            }
            $http->respond(200, 'ok', $text);
            break;

        case '/stderr-partial':
            fwrite(STDERR, (string) ($q['text'] ?? 'partial'));
            $http->respond(200, 'ok', $text);
            break;

        case '/flood':
            $line = str_repeat('f', 99) . "\n";
            $chunk = str_repeat($line, 10 * 1024); // ~1 MB
            for ($i = 0, $n = $int('mb', 1); $i < $n; $i++) {
                fwrite(STDERR, $chunk);
            }
            $http->respond(200, 'flooded', $text);
            break;

        case '/stop':
            if (!isset($q['pid']) || (int) $q['pid'] === getmypid()) {
                $http->stop();
            } else {
                $http->respond(200, (string) getmypid(), $text);
            }
            break;

        case '/garbage':
            $http->getWorker()->relay()->sendRaw("oops, some debug output on stdout\n");
            break;

        case '/env':
            $v = getenv((string) ($q['name'] ?? ''));
            $http->respond(200, $v === false ? '(unset)' : $v, $text);
            break;

        case '/uid':
            $st = (string) file_get_contents('/proc/self/status');
            preg_match('/^Uid:\s+(\d+)/m', $st, $u);
            preg_match('/^Gid:\s+(\d+)/m', $st, $g);
            $http->respond(200, ($u[1] ?? '?') . ' ' . ($g[1] ?? '?'), $text);
            break;

        default:
            $http->respond(404, "not found\n", $text);
    }
}
exit(0);
