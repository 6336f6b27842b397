<?php

declare(strict_types=1);

/*
 * Jobs worker for tests/integration/test_jobs.py. Payload JSON:
 *   {"sink": FILE}                        append "<id> <pipeline> <pid>\n" to FILE, ack
 *   + "fail_first": DIR                   first attempt (no DIR/<id>) throws → nack with requeue
 *   + "sleep_ms": N, "start": FILE        append "<id> <pid>\n" to FILE, sleep, then sink
 *   + "answer": "raw text"                answer that text instead of an ack (malformed ack)
 *   + "hang_first": DIR                   first attempt (no DIR/<id>) sleeps 30 s (jobs.timeout)
 *   + "fail": "message"                   always throws (nack with requeue) after "start"
 *   + "nack": "message"                   nack without requeue
 *   {"noop": true}                        ack at once, nothing else (benchmarks)
 */
require __DIR__ . '/../../php/src/autoload.php';

use Forkline\Jobs\Consumer;
use Forkline\Jobs\Task;
use Forkline\Payload;
use Forkline\Worker;

function append(string $file, string $line): void
{
    file_put_contents($file, $line . "\n", FILE_APPEND | LOCK_EX);
}

$worker = Worker::create();
Consumer::run(static function (Task $t) use ($worker): void {
    $p = json_decode($t->payload, true);
    if (isset($p['noop'])) {
        return;
    }
    if (isset($p['start'])) {
        append($p['start'], $t->id . ' ' . getmypid());
    }
    if (isset($p['hang_first'])) {
        $mark = $p['hang_first'] . '/' . $t->id;
        if (!file_exists($mark)) {
            touch($mark);
            sleep(30);
        }
    }
    if (isset($p['sleep_ms'])) {
        usleep((int) $p['sleep_ms'] * 1000);
    }
    if (isset($p['fail'])) {
        throw new RuntimeException((string) $p['fail']);
    }
    if (isset($p['nack'])) {
        $t->nack((string) $p['nack']);
        return;
    }
    if (isset($p['fail_first'])) {
        $mark = $p['fail_first'] . '/' . $t->id;
        if (!file_exists($mark)) {
            touch($mark);
            throw new RuntimeException('first attempt fails');
        }
    }
    if (isset($p['answer'])) {
        if (!file_exists($p['sink'] . '.odd')) {
            touch($p['sink'] . '.odd');
            $worker->respond(new Payload((string) $p['answer']));
            // mark the task answered: the Consumer must not ack it again
            (new ReflectionProperty($t, 'answered'))->setValue($t, true);
            return;
        }
    }
    append($p['sink'], $t->id . ' ' . $t->pipeline . ' ' . getmypid() . ' ' . json_encode($t->headers));
}, $worker);
