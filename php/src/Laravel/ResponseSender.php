<?php

declare(strict_types=1);

namespace Forkline\Laravel;

use Forkline\HttpWorker;
use Forkline\Payload;
use Symfony\Component\HttpFoundation\BinaryFileResponse;
use Symfony\Component\HttpFoundation\Response;
use Symfony\Component\HttpFoundation\ResponseHeaderBag;
use Symfony\Component\HttpFoundation\StreamedResponse;

/**
 * Sends a Symfony/Laravel response over the relay.
 *
 * Plain responses go out as one frame with a Content-Length. Streamed and file responses run
 * their sendContent() under an output buffer whose every flush (ob_flush() in the app, or 8 KB of
 * output) becomes one STREAM frame, then a final frame ends the response. Anything the app
 * echoed while the kernel handled the request precedes the body, as under php-fpm.
 */
final class ResponseSender
{
    /** PHP sets PING on the frame after every fifth stream frame (spec §14.5). */
    private const PING_EVERY = 5;

    private const CHUNK = 8192;

    /**
     * @param (\Closure(\Throwable): void)|null $report gets an exception thrown by a streamed
     *        response after its first chunk was sent (too late for an error page)
     */
    public function __construct(private readonly HttpWorker $http, private readonly ?\Closure $report = null)
    {
    }

    /** Reads a ResponseHeaderBag's headers under the names the app wrote, without the cookies. */
    private static ?\Closure $readBag = null;

    /** @return array<string, list<mixed>> headers with Set-Cookie lines */
    public static function headers(Response $response): array
    {
        $bag = $response->headers;
        if ($bag instanceof ResponseHeaderBag) {
            // allPreserveCaseWithoutCookies() goes through all(), which renders every cookie
            // to a string only to drop it again: read the bag's arrays instead.
            self::$readBag ??= \Closure::bind(static function (ResponseHeaderBag $bag): array {
                $headers = [];
                foreach ($bag->headers as $key => $values) {
                    $headers[$bag->headerNames[$key] ?? $key] = $values;
                }

                return $headers;
            }, null, ResponseHeaderBag::class);
            $headers = (self::$readBag)($bag);
        } else {
            $headers = $bag->allPreserveCaseWithoutCookies();
        }
        foreach ($bag->getCookies() as $cookie) {
            $headers['Set-Cookie'][] = (string) $cookie;
        }

        return $headers;
    }

    public function send(Response $response, string $method, string $echoed = ''): void
    {
        if ($response instanceof StreamedResponse || $response instanceof BinaryFileResponse) {
            $this->stream($response, $echoed);

            return;
        }

        $status = $response->getStatusCode();
        $headers = self::headers($response);
        $body = $echoed . (string) $response->getContent();
        if ($status < 200 || $status === 204 || $status === 304) {
            $body = '';
        } elseif ($method !== 'HEAD') {
            unset($headers['Content-Length'], $headers['content-length']);
            $headers['Content-Length'] = [(string) strlen($body)];
        }
        $this->http->respond($status, $body, $headers);
    }

    /**
     * Streams sendContent()'s output. Returns false when the server stopped the stream (the
     * client went away); the rest of the output is then discarded.
     */
    public function stream(Response $response, string $echoed = ''): bool
    {
        $status = $response->getStatusCode();
        $headers = self::headers($response);
        unset($headers['Content-Length'], $headers['content-length']);
        $worker = $this->http->getWorker();
        $context = $this->http->encodeContext($status, HttpWorker::normalizeHeaders($headers));
        $codec = $this->http->codec() ?? HttpWorker::CODEC_PROTO;
        $pipes = $worker->relay()->isPipes();

        $sent = 0;
        $stopped = false;
        $failure = null;
        $emit = static function (string $chunk) use ($worker, $context, $codec, $pipes, &$sent, &$stopped, &$failure): void {
            if ($chunk === '' || $stopped || $failure !== null) {
                return;
            }
            try {
                if ($worker->pollStreamStop()) {
                    $stopped = true;

                    return;
                }
                $sent++;
                $ping = $pipes && $sent > self::PING_EVERY && ($sent - 1) % self::PING_EVERY === 0;
                $worker->respond(new Payload($chunk, $context), $codec, false, $ping);
            } catch (\Throwable $e) {
                $failure = $e; // thrown out of an output handler it would be lost
            }
        };

        $emit($echoed);
        $level = ob_get_level();
        ob_start(static function (string $buffer, int $phase) use ($emit): string {
            if (($phase & PHP_OUTPUT_HANDLER_CLEAN) === 0) {
                $emit($buffer);
            }

            return '';
        }, self::CHUNK);
        $thrown = null;
        try {
            $response->sendContent();
        } catch (\Throwable $e) {
            $thrown = $e;
        }
        while (ob_get_level() > $level) {
            ob_end_flush();
        }
        if ($failure !== null) {
            throw $failure; // the relay itself failed: nothing more can be sent
        }
        if ($thrown !== null && $sent === 0) {
            throw $thrown; // nothing went out yet: the caller can still answer with an error page
        }
        // The status line is out: end the response and hand the error to the reporter.
        $worker->respond(new Payload('', $context), $codec, true);
        if ($thrown !== null && $this->report !== null) {
            ($this->report)($thrown);
        }

        return !$stopped;
    }
}
