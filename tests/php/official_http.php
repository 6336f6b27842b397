<?php

/**
 * An HTTP worker that reproduces, byte for byte, what the OFFICIAL RoadRunner PHP packages put on
 * the relay (spiral/goridge 4.2 StreamRelay, roadrunner-worker 3.5, roadrunner-http 3.4/3.5), as
 * spec goridge §14 describes them, for tests/integration/test_official_compat.py. It does not use
 * forkline's php/ relay: the reading is as strict as goridge's, so a server that breaks a rule
 * shows up here (Forkline\Http\Proto is used only to encode/decode http.v1 messages).
 *
 * Relay (goridge 4.2): a frame header is ONE fread(STDIN, 12); a short one is "Incorrect header
 * size" and the worker dies (§14.1). Options + payload are then read in a loop. The CRC is not
 * checked. A task must carry exactly one option: under strict_types options[0] missing is a
 * TypeError (§14.2), which the documented loop answers with an unsolicited 400.
 *
 * Every problem the worker sees is written to stderr as "OFFICIAL-VIOLATION ..." so the test can
 * assert there is none.
 *
 *   /pid                       the pid
 *   /echo                      "POST 123 <sha1> parsed=0": method, body length, sha1, parsed
 *   /split?ms=N                the answer's 12-byte header in one write, the rest N ms later
 *   /split-header?ms=N         even the header in two writes (5 + 7 bytes), N ms apart
 *   /throw500?ms=N             the documented loop's catch: respond(500) and then error(),
 *                              N ms apart (the next task may reach the worker in between)
 *   /throw                     Octane's: error() only
 *   /late400?ms=N              200, then N ms later (idle) an unsolicited 400 data frame
 *   /stop-idle?ms=N            200, then N ms later (idle) the worker's {"stop":true} frame
 *   /stream?n=N&ms=D&on_stop=M N chunks "chunk i\n" D ms apart, PING on frames 6, 11, 16, ...;
 *                              STOP is noticed only while a PONG is awaited (pipes); then
 *                              M = error (uncaught StreamStoppedException, Octane-like loop:
 *                              ERROR frame), 500 (documented loop: respond(500) + error()),
 *                              catch (the library's own empty final frame), ignore (a
 *                              library or app that never looks: streams on to the end);
 *                              final_ping=1 sets PING on the final frame too
 *   /stop-exit                 the first time (no $EXEC_LOG.stopped): {"stop":true} instead of
 *                              an answer, then exit at once; later: 200 "stop-exit PID"
 *   /counters                  "pings=P pongs=Q stops=S skipped=K" since start
 *   /strheaders                JSON codec: headers as plain strings and lists mixed
 *
 * Every task is appended as "pid path" to the file named by $EXEC_LOG, if set.
 * $CODEC_FLAGS_34=1 answers JSON with frame flags 0x00 (roadrunner-http 3.4) instead of 0x08.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';

use Forkline\Http\Proto;

const F_CONTROL = 0x01;
const F_JSON = 0x08;
const F_ERROR = 0x40;
const F_PROTO = 0x80;
const B_STREAM = 0x01;
const B_STOP = 0x02;
const B_PING = 0x04;
const B_PONG = 0x08;

final class StreamStoppedException extends RuntimeException
{
}

/** @var array{pings:int,pongs:int,stops:int,skipped:int} */
$counters = ['pings' => 0, 'pongs' => 0, 'stops' => 0, 'skipped' => 0];
/** Frames read while streaming that are not PONG/STOP (a PID request): handled afterwards. */
$queued = [];

function violation(string $what): void
{
    fwrite(STDERR, 'OFFICIAL-VIOLATION ' . getmypid() . ': ' . $what . "\n");
}

/** goridge Frame::packFrame. */
function pack_frame(int $flags, string $payload, array $options = [], int $byte10 = 0): string
{
    $h = chr(0x10 | (3 + count($options))) . chr($flags) . pack('V', strlen($payload));
    $h .= pack('V', crc32($h)) . chr($byte10) . "\0";
    foreach ($options as $o) {
        $h .= pack('V', $o);
    }

    return $h . $payload;
}

/** goridge StreamRelay::send: one fwrite. */
function send_frame(string $bytes): void
{
    if (fwrite(STDOUT, $bytes) !== strlen($bytes)) {
        violation('short write to the relay');
        exit(1);
    }
}

/**
 * goridge 4.2 StreamRelay::waitFrame: ONE fread for the header, a loop for the rest.
 *
 * @return array{flags:int, options:list<int>, payload:string, byte10:int}
 */
function wait_frame(): array
{
    $header = fread(STDIN, 12);
    if ($header === '' && feof(STDIN)) {
        exit(0); // the server closed the relay
    }
    if ($header === false || strlen($header) !== 12) {
        violation('Unable to read frame header: Incorrect header size (' . strlen((string) $header) . ' bytes)');
        exit(1);
    }
    $hl = ord($header[0]) & 0x0f;
    $len = unpack('V', substr($header, 2, 4))[1];
    $length = ($hl - 3) * 4 + $len;
    $rest = '';
    while ($length > 0) {
        $buf = fread(STDIN, $length);
        if ($buf === false || ($buf === '' && feof(STDIN))) {
            violation('EOF inside a frame');
            exit(1);
        }
        $rest .= $buf;
        $length -= strlen($buf);
    }
    $options = [];
    for ($i = 0; $i < $hl - 3; $i++) {
        $options[] = unpack('V', substr($rest, $i * 4, 4))[1];
    }

    return ['flags' => ord($header[1]), 'options' => $options,
        'payload' => (string) substr($rest, ($hl - 3) * 4), 'byte10' => ord($header[10])];
}

/**
 * roadrunner-worker 3.5 Worker::waitPayload: control frames handled, STOP/PONG outside a stream
 * skipped, a task split into [context, body] by options[0].
 *
 * @return array{0:string,1:string}|null
 */
function wait_payload(): ?array
{
    global $counters, $queued;
    while (true) {
        $f = $queued !== [] ? array_shift($queued) : wait_frame();
        if ($f['flags'] & F_CONTROL) {
            $cmd = json_decode($f['payload'], true);
            if (!is_array($cmd)) {
                throw new RuntimeException('Invalid task header, JSON payload is expected');
            }
            if (!empty($cmd['stop'])) {
                return null;
            }
            if (!empty($cmd['pid'])) {
                send_frame(pack_frame(F_CONTROL, json_encode(['pid' => getmypid()])));
                continue;
            }
            throw new RuntimeException('Invalid task header, undefined control package');
        }
        if ($f['byte10'] & (B_STOP | B_PONG)) {
            $counters['skipped']++;
            $counters[$f['byte10'] & B_PONG ? 'pongs' : 'stops']++;
            continue;
        }
        if ($f['byte10'] !== 0) {
            violation(sprintf('task with byte10 0x%02x', $f['byte10']));
        }
        if (count($f['options']) !== 1) {
            // PHP: "Undefined array key 0", then substr(..., null) is a TypeError (strict_types)
            throw new TypeError('task frame with ' . count($f['options']) . ' options');
        }
        $n = $f['options'][0];

        return [substr($f['payload'], 0, $n), (string) substr($f['payload'], $n)];
    }
}

/** The codec of this process: the first request decides (roadrunner-http 3.5). */
$codec = null;

function respond(int $status, string $body, array $headers = [], bool $eos = true, int $byte10 = 0): void
{
    global $codec;
    if ($codec === F_JSON) {
        $ctx = json_encode(['status' => $status, 'headers' => $headers === [] ? new stdClass() : $headers]);
        $flags = getenv('CODEC_FLAGS_34') === '1' ? 0x00 : F_JSON;
    } else {
        $norm = [];
        foreach ($headers as $k => $v) {
            $norm[$k] = is_array($v) ? array_values($v) : [(string) $v];
        }
        $ctx = Proto::encodeResponse($status, $norm);
        $flags = F_PROTO;
    }
    send_frame(pack_frame($flags, $ctx . $body, [strlen($ctx)], ($eos ? 0 : B_STREAM) | $byte10));
}

function worker_error(string $message): void
{
    send_frame(pack_frame(F_ERROR, $message));
}

function worker_stop(): void
{
    send_frame(pack_frame(0, '{"stop":true}', [13]));
}

/**
 * Reads whatever the server sent while a PONG is awaited (zero-timeout select, as the library
 * does between chunks on pipes). Returns true once a STOP was seen.
 */
function poll_stop(bool &$awaitingPong): bool
{
    global $counters, $queued;
    $stop = false;
    while ($awaitingPong || !$stop) {
        $r = [STDIN];
        $w = $e = null;
        if (stream_select($r, $w, $e, 0, 0) < 1) {
            break;
        }
        $f = wait_frame();
        if ($f['byte10'] & B_PONG) {
            $counters['pongs']++;
            $awaitingPong = false;
        } elseif ($f['byte10'] & B_STOP) {
            $counters['stops']++;
            $stop = true;
        } elseif ($f['flags'] & F_CONTROL) {
            $queued[] = $f; // worker 3.5 keeps it in $payloads; waitPayload handles it later
        } else {
            violation(sprintf('unexpected frame during a stream (flags 0x%02x)', $f['flags']));
        }
        if (!$awaitingPong) {
            break; // the library stops polling once its PONG is in
        }
    }

    return $stop;
}

/** roadrunner-http 3.5 respondStream over a generator; the STOP check happens before each chunk. */
function respond_stream(int $status, Generator $gen, array $headers, bool $finalPing = false,
    bool $ignoreStop = false): void
{
    global $counters;
    $sent = 0;
    $awaitingPong = false;
    while (true) {
        if (!$gen->valid()) {
            $counters['pings'] += (int) $finalPing;
            respond($status, (string) $gen->getReturn(), $headers, true, $finalPing ? B_PING : 0);

            return;
        }
        if ($awaitingPong && !$ignoreStop && poll_stop($awaitingPong)) {
            $gen->throw(new StreamStoppedException('stream stopped by the server'));
            // a generator that catches it and returns: the library's empty final frame
            send_frame(pack_frame(0, '', [0]));

            return;
        }
        $sent++;
        $ping = $sent > 1 && ($sent - 1) % 5 === 0; // frames 6, 11, 16, ... (§14.5)
        if ($ping) {
            $counters['pings']++;
            $awaitingPong = true;
        }
        respond($status, (string) $gen->current(), $headers, false, $ping ? B_PING : 0);
        $gen->next();
    }
}

function chunks(int $n, int $ms, bool $catch): Generator
{
    for ($i = 1; $i <= $n; $i++) {
        try {
            yield "chunk $i\n";
        } catch (StreamStoppedException $e) {
            if ($catch) {
                return '';
            }
            throw $e;
        }
        if ($ms > 0) {
            usleep($ms * 1000);
        }
    }

    return '';
}

$text = ['Content-Type' => 'text/plain'];
$pendingIdle = null; // [ms, callable]: something to send while idle, after the answer

while (true) {
    if ($pendingIdle !== null) {
        usleep($pendingIdle[0] * 1000);
        ($pendingIdle[1])();
        $pendingIdle = null;
    }
    try {
        $task = wait_payload();
    } catch (Throwable $e) {
        // the loop of RoadRunner's documentation: an unsolicited 400
        violation('waitRequest threw: ' . $e->getMessage());
        respond(400, '');
        continue;
    }
    if ($task === null) {
        break;
    }
    [$ctx, $body] = $task;
    if ($ctx === '' && $body === '') {
        break; // roadrunner-http: an empty task means "terminate"
    }
    if ($codec === null) {
        json_decode($ctx);
        $codec = json_last_error() === JSON_ERROR_NONE ? F_JSON : F_PROTO;
    }
    if ($codec === F_JSON) {
        $req = json_decode($ctx, true);
        $method = (string) $req['method'];
        $query = (string) $req['rawQuery'];
        $uri = (string) $req['uri'];
    } else {
        $req = Proto::decodeRequest($ctx);
        $method = $req['method'];
        $query = $req['rawQuery'];
        $uri = $req['uri'];
    }
    parse_str($query, $q);
    $ms = isset($q['ms']) ? (int) $q['ms'] : 0;
    $path = (string) parse_url($uri, PHP_URL_PATH);
    $log = getenv('EXEC_LOG');
    if (is_string($log) && $log !== '') {
        file_put_contents($log, getmypid() . ' ' . $path . "\n", FILE_APPEND | LOCK_EX);
    }

    try {
        switch ($path) {
            case '/pid':
                respond(200, (string) getmypid(), $text);
                break;

            case '/echo':
                $parsed = $codec === F_JSON ? !empty($req['parsed']) : $req['parsed'];
                respond(200, $method . ' ' . strlen($body) . ' ' . sha1($body) . ' parsed=' . (int) $parsed, $text);
                break;

            case '/split':
            case '/split-header':
                $hctx = Proto::encodeResponse(200, ['Content-Type' => ['text/plain']]);
                $pl = $hctx . 'split ' . getmypid();
                $flags = F_PROTO;
                if ($codec === F_JSON) {
                    $hctx = '{"status":200,"headers":{"Content-Type":["text/plain"]}}';
                    $pl = $hctx . 'split ' . getmypid();
                    $flags = F_JSON;
                }
                $frame = pack_frame($flags, $pl, [strlen($hctx)]);
                $cut = $path === '/split' ? 12 : 5;
                fwrite(STDOUT, substr($frame, 0, $cut));
                fflush(STDOUT);
                usleep($ms * 1000);
                if ($path === '/split-header') {
                    fwrite(STDOUT, substr($frame, 5, 7));
                    fflush(STDOUT);
                    usleep($ms * 1000);
                    $cut = 12;
                }
                fwrite(STDOUT, substr($frame, $cut));
                break;

            case '/throw500':
                throw new LogicException('thrown by /throw500 in worker ' . getmypid());

            case '/throw':
                worker_error('thrown by /throw in worker ' . getmypid());
                break;

            case '/late400':
                respond(200, 'late400 ' . getmypid(), $text);
                $pendingIdle = [$ms, static fn () => respond(400, '')];
                break;

            case '/stop-idle':
                respond(200, 'stop-idle ' . getmypid(), $text);
                $pendingIdle = [$ms, static fn () => worker_stop()];
                break;

            case '/stream':
                $mode = (string) ($q['on_stop'] ?? 'error');
                try {
                    respond_stream(200, chunks((int) ($q['n'] ?? 3), $ms, $mode === 'catch'), $text,
                        !empty($q['final_ping']), $mode === 'ignore');
                } catch (StreamStoppedException $e) {
                    if ($mode === '500') {
                        throw $e; // to the documented loop below
                    }
                    // Octane's loop: Worker::error() with the formatted exception
                    worker_error((string) $e);
                }
                break;

            case '/stop-exit':
                if (!file_exists((string) getenv('EXEC_LOG') . '.stopped')) {
                    touch((string) getenv('EXEC_LOG') . '.stopped');
                    worker_stop(); // instead of an answer, and gone at once
                    exit(0);
                }
                respond(200, 'stop-exit ' . getmypid(), $text);
                break;

            case '/counters':
                respond(200, sprintf('pings=%d pongs=%d stops=%d skipped=%d', $counters['pings'],
                    $counters['pongs'], $counters['stops'], $counters['skipped']), $text);
                break;

            case '/strheaders':
                respond(201, 'strheaders', ['Content-Type' => 'text/plain', 'X-Plain' => 'one',
                    'X-List' => ['a', 'b']]);
                break;

            default:
                respond(404, "not found\n", $text);
        }
    } catch (Throwable $e) {
        // RoadRunner's documented worker loop
        respond(500, 'Something Went Wrong!');
        usleep($ms * 1000); // /throw500?ms=N: a slow (string) $e, the next task already sent
        worker_error((string) $e);
    }
}
exit(0);
