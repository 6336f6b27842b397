<?php

declare(strict_types=1);

namespace Forkline;

/**
 * Worker-loop primitives over a relay (spec §3–§5).
 *
 *   $worker = Worker::create();                 // relay from RR_RELAY, echo -> stderr
 *   while (($p = $worker->waitPayload()) !== null) {
 *       $worker->respond(new Payload('body', 'context'));
 *   }
 */
final class Worker
{
    private static bool $intercepting = false;

    private bool $stopRequested = false;

    /** sendData(): the last header+option bytes and what they encode */
    private int $lastSizes = -1;
    private int $lastBits = -1;
    private string $lastHead = '';

    public function __construct(private readonly Relay $relay)
    {
    }

    /**
     * Worker on the relay named by RR_RELAY (or the given one). Like the
     * official Worker::create() it installs an output buffer so that anything
     * the application echoes goes to STDERR instead of corrupting the relay.
     */
    public static function create(?Relay $relay = null, bool $interceptOutput = true): self
    {
        if ($interceptOutput) {
            self::interceptOutput();
        }

        return new self($relay ?? Relay::create());
    }

    /**
     * Redirect PHP output (echo, print, var_dump, displayed errors) to STDERR
     * with an output buffer of chunk size 1. Frames are written with fwrite()
     * on the relay stream, which bypasses output buffering.
     */
    public static function interceptOutput(): void
    {
        if (self::$intercepting) {
            return;
        }
        self::$intercepting = true;
        ini_set('display_errors', 'stderr');
        $stderr = defined('STDERR') ? STDERR : fopen('php://stderr', 'wb');
        ob_start(static function (string $chunk) use ($stderr): string {
            if ($chunk !== '' && $stderr !== false) {
                fwrite($stderr, $chunk);
            }

            return '';
        }, 1);
    }

    public function relay(): Relay
    {
        return $this->relay;
    }

    /** True once a CONTROL {"stop":true} has been received. */
    public function isStopRequested(): bool
    {
        return $this->stopRequested;
    }

    /**
     * Wait for the next task. Answers PID requests on the way, skips stray
     * PONG / stream-STOP frames, and returns null when the server sent the
     * CONTROL stop.
     */
    public function waitPayload(): ?Payload
    {
        while (!$this->stopRequested) {
            $frame = $this->relay->waitData();
            if ($frame instanceof Payload) {
                return $frame; // a big task, split by the relay
            }
            if (($frame->flags & Frame::CONTROL) !== 0) {
                $this->handleControl($frame->payload);
                continue;
            }
            if (($frame->stream & (Frame::STOP | Frame::PONG)) !== 0) {
                continue; // leftovers of a finished stream (spec §5.3, §5.2)
            }

            // payloadOf(), inlined: once per request
            $ctxLen = $frame->options[0] ?? -1;
            if ($ctxLen < 0 || $ctxLen > strlen($frame->payload)) {
                return self::payloadOf($frame); // throws the precise error
            }

            return new Payload(substr($frame->payload, $ctxLen), substr($frame->payload, 0, $ctxLen));
        }

        return null;
    }

    /**
     * Send a response data frame: one option = context length.
     *
     * @param int $flags codec flags (0 generic, 0x80 proto HTTP, 0x08 JSON HTTP)
     * @param bool $endOfStream false sets the STREAM bit (more frames follow)
     * @param bool $ping set the PING bit (asks the server for a PONG)
     */
    public function respond(Payload $payload, int $flags = 0, bool $endOfStream = true, bool $ping = false): void
    {
        $stream = ($endOfStream ? 0 : Frame::STREAM) | ($ping ? Frame::PING : 0);
        $this->sendData($payload->context, $payload->body, $flags, $stream);
    }

    /**
     * respond() without the Payload object: the frame every HTTP response
     * takes. Packs the header here instead of building a Frame (same bytes as
     * Frame::encode() with one option, spec §2.8/§4) because this runs once per
     * request; the concatenation is a single allocation and a single write.
     *
     * @param int $stream byte 10: Frame::STREAM and/or Frame::PING
     */
    public function sendData(string $context, string $body, int $flags = 0, int $stream = 0): void
    {
        $ctxLen = strlen($context);
        $length = $ctxLen + strlen($body);
        if ($length > 0xFFFFFFFF) {
            throw new ProtocolException("payload too large: $length bytes");
        }
        // both < 2^32 (checked above): one int holds them exactly
        $sizes = $length << 32 | $ctxLen;
        $bits = ($flags & 0xFE) << 8 | ($stream & 0xFF); // 0xFE: never CONTROL
        if ($sizes !== $this->lastSizes || $bits !== $this->lastBits) {
            // otherwise: same sizes, flags and stream byte as the previous response, same 16 bytes
            $this->lastHead = Frame::head($flags & 0xFE, $stream, $length, [$ctxLen]);
            $this->lastSizes = $sizes;
            $this->lastBits = $bits;
        }
        $this->relay->sendRaw($this->lastHead . $context . $body);
    }

    /** Report a soft error for the current task: flags ERROR, no options. */
    public function error(string $message): void
    {
        $this->relay->send(new Frame($message, [], Frame::ERROR));
    }

    /** Ask the server to retire this worker: data frame, context {"stop":true}, empty body. */
    public function stop(): void
    {
        $this->respond(new Payload('', '{"stop":true}'));
    }

    /**
     * During a streamed response: consume whatever the server sent (PONG,
     * PID requests, a CONTROL stop) and report whether it asked to stop the
     * stream (byte-10 STOP). $timeout is the time to wait for the first frame.
     */
    public function pollStreamStop(float $timeout = 0.0): bool
    {
        while ($this->relay->hasPendingInput($timeout)) {
            $timeout = 0.0;
            $frame = $this->relay->waitFrame();
            if ($frame->hasFlag(Frame::CONTROL)) {
                $this->handleControl($frame->payload);
                continue;
            }
            if ($frame->hasStream(Frame::STOP)) {
                return true;
            }
            if ($frame->hasStream(Frame::PONG)) {
                continue;
            }
            throw new ProtocolException('unexpected data frame while streaming a response');
        }

        return false;
    }

    /** Split a data frame into context and body (spec §4). */
    public static function payloadOf(Frame $frame): Payload
    {
        $ctxLen = $frame->options[0] ?? null;
        if ($ctxLen === null) {
            throw new ProtocolException('data frame without the context-length option');
        }
        if ($ctxLen > strlen($frame->payload)) {
            throw new ProtocolException("context length $ctxLen exceeds payload length " . strlen($frame->payload));
        }

        return new Payload(substr($frame->payload, $ctxLen), substr($frame->payload, 0, $ctxLen));
    }

    private function handleControl(string $json): void
    {
        $msg = json_decode($json, true);
        if (!is_array($msg)) {
            throw new ProtocolException('Invalid task header, JSON payload is expected: ' . $json);
        }
        if (!empty($msg['stop'])) {
            $this->stopRequested = true;

            return;
        }
        if (!empty($msg['pid'])) {
            $this->relay->send(new Frame(json_encode(['pid' => getmypid()], JSON_THROW_ON_ERROR), [], Frame::CONTROL));

            return;
        }
        throw new ProtocolException('undefined control package: ' . $json);
    }
}
