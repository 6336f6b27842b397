<?php

declare(strict_types=1);

namespace Forkline\Jobs;

use Forkline\Payload;
use Forkline\Worker;

/**
 * One job received by a jobs worker (spec §7.1): context {id, job, driver, queue, headers,
 * pipeline}, body = the payload as pushed. Answer exactly once with ack(), nack() or requeue()
 * (spec §7.2: types 2, 3, 4).
 */
final class Task
{
    private bool $answered = false;

    /** @param array<string, list<string>> $headers */
    public function __construct(
        private readonly Worker $worker,
        public readonly string $id,
        public readonly string $name,
        public readonly string $pipeline,
        public readonly string $driver,
        public readonly string $queue,
        public readonly array $headers,
        public readonly string $payload,
    ) {
    }

    public function isAnswered(): bool
    {
        return $this->answered;
    }

    public function ack(): void
    {
        $this->answer(2, []);
    }

    /** Nack; with $requeue the job comes back after $delay seconds. */
    public function nack(string|\Throwable $message, bool $requeue = false, int $delay = 0): void
    {
        $msg = $message instanceof \Throwable ? $message->getMessage() : $message;
        $this->answer(3, ['message' => $msg, 'requeue' => $requeue, 'delay_seconds' => $delay]);
    }

    /** @param array<string, list<string>> $headers merged into the job's headers */
    public function requeue(string $message = '', int $delay = 0, array $headers = []): void
    {
        $this->answer(4, [
            'message' => $message,
            'delay_seconds' => $delay,
            'headers' => $headers === [] ? new \stdClass() : $headers,
        ]);
    }

    /** @param array<string, mixed> $data */
    private function answer(int $type, array $data): void
    {
        if ($this->answered) {
            throw new \LogicException("job {$this->id} was already answered");
        }
        $this->answered = true;
        $this->worker->respond(new Payload(json_encode(['type' => $type, 'data' => $data], JSON_THROW_ON_ERROR)));
    }
}
