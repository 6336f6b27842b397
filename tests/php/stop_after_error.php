<?php

/**
 * Test worker imitating Laravel Octane's error path (spec §3.6, §6.8):
 * every task is answered normally (200 "ok N"), except the 2nd one, which is
 * answered with an ERROR frame followed immediately by an unsolicited
 * {"stop":true} data frame. The worker then keeps waiting for tasks, as
 * Octane does, until the server stops it.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';

use Forkline\HttpWorker;

$http = HttpWorker::create();
$n = 0;
$log = getenv('EXEC_LOG');          // every task received is appended here: "pid path"
$delay = getenv('STOP_DELAY_MS');   // time between the ERROR and the stop frames (Octane's listeners)
while (($req = $http->waitRequest()) !== null) {
    $n++;
    if (is_string($log) && $log !== '') {
        file_put_contents($log, getmypid() . ' ' . $req->path() . "\n", FILE_APPEND | LOCK_EX);
    }
    if ($n === 2) {
        fwrite(STDERR, 'stop_after_error ' . getmypid() . ": task 2 -> error + stop\n");
        $http->error('octane-like failure on task 2');
        if (is_string($delay) && is_numeric($delay)) {
            usleep((int) $delay * 1000);
        }
        $http->stop();
        continue;
    }
    $http->respond(200, "ok $n\n", ['Content-Type' => 'text/plain', 'X-Worker-Pid' => (string) getmypid()]);
}
exit(0);
