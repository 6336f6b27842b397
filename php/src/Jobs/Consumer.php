<?php

declare(strict_types=1);

namespace Forkline\Jobs;

use Forkline\Worker;

/**
 * The jobs worker loop (RR_MODE=jobs). The server pushes tasks on the relay; the worker never
 * polls a broker.
 *
 *     $consumer = new Consumer(Worker::create());
 *     while ($task = $consumer->waitTask()) {
 *         try { handle($task->payload); $task->ack(); }
 *         catch (\Throwable $e) { $task->nack($e, requeue: true); }
 *     }
 *
 * or Consumer::run(fn (Task $t) => ...): a handler that returns acks, one that throws nacks
 * with requeue (after $retryDelay seconds); a task the handler answered itself is left alone.
 */
final class Consumer
{
    public function __construct(private readonly Worker $worker)
    {
    }

    /** The next job, or null when the server asked the worker to stop. */
    public function waitTask(): ?Task
    {
        while (($p = $this->worker->waitPayload()) !== null) {
            $ctx = json_decode($p->context, true);
            if (!is_array($ctx) || !isset($ctx['id'])) {
                $this->worker->error('Task payload does not have a valid header');
                continue;
            }

            return new Task(
                $this->worker,
                (string) $ctx['id'],
                (string) ($ctx['job'] ?? ''),
                (string) ($ctx['pipeline'] ?? 'unknown'),
                (string) ($ctx['driver'] ?? 'unknown'),
                (string) ($ctx['queue'] ?? 'unknown'),
                is_array($ctx['headers'] ?? null) ? $ctx['headers'] : [],
                $p->body,
            );
        }

        return null;
    }

    /** @param callable(Task): void $handler */
    public static function run(callable $handler, ?Worker $worker = null, int $retryDelay = 0): void
    {
        $c = new self($worker ?? Worker::create());
        while (($task = $c->waitTask()) !== null) {
            try {
                $handler($task);
                if (!$task->isAnswered()) {
                    $task->ack();
                }
            } catch (\Throwable $e) {
                if (!$task->isAnswered()) {
                    $task->nack($e, true, $retryDelay);
                }
            }
        }
    }
}
