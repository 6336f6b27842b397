<?php

declare(strict_types=1);

namespace Forkline;

use Forkline\Http\Proto;
use Forkline\Http\Request;

/**
 * HTTP worker (RR_MODE=http, spec §6).
 *
 * Codec detection follows roadrunner-http 3.5: the first request decides.
 * If its context is valid JSON the process speaks the legacy JSON codec for
 * its whole lifetime (responses flagged 0x08), otherwise http.v1 protobuf
 * (responses flagged 0x80).
 *
 *   $http = HttpWorker::create();
 *   while (($req = $http->waitRequest()) !== null) {
 *       $http->respond(200, "hi\n", ['Content-Type' => 'text/plain']);
 *   }
 */
final class HttpWorker
{
    public const CODEC_PROTO = Frame::CODEC_PROTO;
    public const CODEC_JSON = Frame::CODEC_JSON;

    /** PHP sets PING on the frame after every fifth stream frame (spec §14.5). */
    private const PING_EVERY = 5;

    private ?int $codec = null;

    /**
     * The last response context and what it was built from. A worker mostly
     * answers with the same status and headers, so respond() reuses the bytes
     * when both (and the codec) are identical. Only headers made of scalars
     * and arrays are cached: a \Stringable may render differently next time.
     */
    private ?int $lastStatus = null;
    private ?int $lastCodec = null;
    /** @var array<array-key, mixed> */
    private array $lastHeaders = [];
    private string $lastContext = '';

    public function __construct(private readonly Worker $worker)
    {
    }

    /** HTTP worker on the RR_RELAY relay, with echo redirected to STDERR. */
    public static function create(): self
    {
        return new self(Worker::create());
    }

    public function getWorker(): Worker
    {
        return $this->worker;
    }

    /** CODEC_PROTO or CODEC_JSON once the first request was seen, null before. */
    public function codec(): ?int
    {
        return $this->codec;
    }

    public function codecName(): string
    {
        return match ($this->codec) {
            self::CODEC_JSON => 'json',
            self::CODEC_PROTO => 'proto',
            default => 'unknown',
        };
    }

    /**
     * Next request, or null when the server asked the worker to stop
     * (CONTROL stop, or a task with empty context and empty body).
     */
    public function waitRequest(): ?Request
    {
        $payload = $this->worker->waitPayload();
        if ($payload === null || ($payload->context === '' && $payload->body === '')) {
            return null;
        }

        if ($this->codec === null) {
            $this->codec = self::isJson($payload->context) ? self::CODEC_JSON : self::CODEC_PROTO;
        }

        if ($this->codec === self::CODEC_JSON) {
            $ctx = json_decode($payload->context, true);
            if (!is_array($ctx)) {
                throw new ProtocolException('invalid JSON request context');
            }

            return Request::fromContext($ctx, $payload->body, false);
        }

        return Request::fromProto($payload->context, $payload->body);
    }

    /**
     * Send a response frame. With $endOfStream = false the frame has the
     * STREAM bit and the response stays open (103 Early Hints, manual streaming).
     *
     * @param array<string, string|int|float|bool|list<mixed>> $headers
     */
    public function respond(int $status, string $body = '', array $headers = [], bool $endOfStream = true): void
    {
        if ($status < 200 && $status >= 100 && $body !== '') {
            throw new \InvalidArgumentException("a $status response cannot carry a body");
        }
        $codec = $this->codec ?? self::CODEC_PROTO;
        if ($status === $this->lastStatus && $codec === $this->lastCodec && $headers === $this->lastHeaders) {
            $context = $this->lastContext;
        } else {
            $plain = true;
            $context = $this->encodeContext($status, self::normalize($headers, $plain));
            if ($plain) {
                $this->lastStatus = $status;
                $this->lastCodec = $codec;
                $this->lastHeaders = $headers;
                $this->lastContext = $context;
            }
        }
        $this->worker->sendData($context, $body, $codec, $endOfStream ? 0 : Frame::STREAM);
    }

    /**
     * Streamed response: one frame per chunk with the STREAM bit, then a final
     * frame without it. Status and headers are repeated on every frame
     * (roadrunner-http 3.5 behaviour). Returns false when the server stopped
     * the stream (client went away); the final empty frame is still sent.
     *
     * @param iterable<mixed, string|\Stringable> $chunks
     * @param array<string, string|int|float|bool|list<mixed>> $headers
     */
    public function respondStream(int $status, iterable $chunks, array $headers = []): bool
    {
        $headers = self::normalizeHeaders($headers);
        $pipes = $this->worker->relay()->isPipes();
        $sent = 0;
        foreach ($chunks as $chunk) {
            if ($this->worker->pollStreamStop()) {
                $this->sendFrame($status, '', $headers, true, false);

                return false;
            }
            $sent++;
            $ping = $pipes && $sent > self::PING_EVERY && ($sent - 1) % self::PING_EVERY === 0;
            $this->sendFrame($status, (string) $chunk, $headers, false, $ping);
        }
        $this->worker->pollStreamStop();
        $this->sendFrame($status, '', $headers, true, false);

        return true;
    }

    public function error(string $message): void
    {
        $this->worker->error($message);
    }

    public function stop(): void
    {
        $this->worker->stop();
    }

    /** Context bytes of a response in the current codec. */
    public function encodeContext(int $status, array $headers): string
    {
        if ($this->codec === self::CODEC_JSON) {
            return json_encode(
                ['status' => $status, 'headers' => $headers === [] ? new \stdClass() : $headers],
                JSON_THROW_ON_ERROR | JSON_INVALID_UTF8_SUBSTITUTE,
            );
        }

        return Proto::encodeResponse($status, $headers);
    }

    /**
     * name => list of strings; scalars are wrapped, non-scalar items dropped.
     *
     * @param array<array-key, mixed> $headers
     * @return array<string, list<string>>
     */
    public static function normalizeHeaders(array $headers): array
    {
        $plain = true;

        return self::normalize($headers, $plain);
    }

    /**
     * normalizeHeaders(); $plain is cleared when an object was converted.
     *
     * @param array<array-key, mixed> $headers
     * @return array<string, list<string>>
     */
    private static function normalize(array $headers, bool &$plain): array
    {
        $out = [];
        foreach ($headers as $name => $values) {
            $list = [];
            foreach (is_array($values) ? $values : [$values] as $v) {
                if (is_string($v)) {
                    $list[] = $v;
                } elseif (is_int($v) || is_float($v)) {
                    $list[] = (string) $v;
                } elseif (is_bool($v)) {
                    $list[] = $v ? '1' : '0';
                } elseif ($v instanceof \Stringable) {
                    $list[] = (string) $v;
                    $plain = false;
                } elseif (is_object($v)) {
                    $plain = false; // dropped, but compared by identity: do not cache
                }
            }
            $out[(string) $name] = $list;
        }

        return $out;
    }

    private function sendFrame(int $status, string $body, array $headers, bool $endOfStream, bool $ping): void
    {
        $this->worker->respond(
            new Payload($body, $this->encodeContext($status, $headers)),
            $this->codec ?? self::CODEC_PROTO,
            $endOfStream,
            $ping,
        );
    }

    /** json_validate() is PHP 8.3+: decode and check the error instead. */
    private static function isJson(string $s): bool
    {
        if ($s === '') {
            return false;
        }
        json_decode($s);

        return json_last_error() === JSON_ERROR_NONE;
    }
}
