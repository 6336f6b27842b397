<?php

/**
 * Driver test: plays the server against real worker processes over pipes.
 *
 *   php tests/php/drive.php
 *
 * Spawns `php php/app/worker.php` with proc_open, performs the PID handshake
 * with the exact §2.9 request frame, sends proto-encoded HTTP requests
 * (/, 100 KB /echo, and the other routes), checks a JSON-codec worker,
 * stops the worker with the CONTROL stop frame and checks it exits 0. It also
 * exercises the integration-test workers in tests/php/.
 *
 * Last line: "php drive: N passed, M failed"; exit status 1 on failure.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';

use Forkline\Frame;
use Forkline\Http\Proto;
use Forkline\Worker;

const ROOT = __DIR__ . '/../..';
const TIMEOUT = 10.0;

$passed = 0;
$failed = 0;

function check(string $name, bool $ok, string $detail = ''): void
{
    global $passed, $failed;
    if ($ok) {
        $passed++;
        echo "ok   - $name\n";
    } else {
        $failed++;
        echo "FAIL - $name" . ($detail !== '' ? "\n       $detail" : '') . "\n";
    }
}

/** A spawned worker process with its pipes. */
final class Proc
{
    /** @var resource */
    public $proc;
    /** @var resource */
    public $stdin;
    /** @var resource */
    public $stdout;
    public int $pid;
    public string $stderrFile;
    public ?int $exitCode = null;

    /** @param array<string,string> $env */
    public function __construct(string $script, array $env = [])
    {
        $this->stderrFile = (string) tempnam(sys_get_temp_dir(), 'forkline-drive-');
        $spec = [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['file', $this->stderrFile, 'w']];
        $proc = proc_open([PHP_BINARY, $script], $spec, $pipes, ROOT, $env + getenv());
        if (!is_resource($proc)) {
            throw new RuntimeException("cannot spawn $script");
        }
        $this->proc = $proc;
        [$this->stdin, $this->stdout] = [$pipes[0], $pipes[1]];
        $this->pid = proc_get_status($proc)['pid'];
    }

    public function send(string $bytes): void
    {
        $done = 0;
        while ($done < strlen($bytes)) {
            $n = fwrite($this->stdin, substr($bytes, $done));
            if ($n === false || $n === 0) {
                throw new RuntimeException('write to worker failed');
            }
            $done += $n;
        }
        fflush($this->stdin);
    }

    /** Read exactly $n bytes or throw on timeout / EOF. */
    public function readExact(int $n, float $timeout = TIMEOUT): string
    {
        $buf = '';
        $deadline = microtime(true) + $timeout;
        while (strlen($buf) < $n) {
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                throw new RuntimeException('timeout reading from worker (' . strlen($buf) . " of $n bytes)");
            }
            $r = [$this->stdout];
            $w = $e = null;
            if (stream_select($r, $w, $e, (int) $left, (int) (fmod($left, 1.0) * 1e6)) < 1) {
                continue;
            }
            $chunk = fread($this->stdout, $n - strlen($buf));
            if ($chunk === false || ($chunk === '' && feof($this->stdout))) {
                throw new RuntimeException('EOF from worker (' . strlen($buf) . " of $n bytes)");
            }
            $buf .= $chunk;
        }

        return $buf;
    }

    /** Read one frame (CRC verified unless $verifyCrc is false). */
    public function readFrame(bool $verifyCrc = true, float $timeout = TIMEOUT): Frame
    {
        $header = $this->readExact(Frame::HEADER_SIZE, $timeout);
        $h = Frame::decodeHeader($header);
        $rest = $this->readExact($h['optionsSize'] + $h['length'], $timeout);

        return Frame::decode($header . $rest, $verifyCrc);
    }

    /** Bytes available within $timeout (for non-frame output). */
    public function readSome(float $timeout = 2.0): string
    {
        $r = [$this->stdout];
        $w = $e = null;
        if (stream_select($r, $w, $e, (int) $timeout, (int) (fmod($timeout, 1.0) * 1e6)) < 1) {
            return '';
        }

        return (string) fread($this->stdout, 65536);
    }

    public function stderr(): string
    {
        return (string) file_get_contents($this->stderrFile);
    }

    /** Wait for exit; returns the exit code or null on timeout. */
    public function wait(float $timeout = TIMEOUT): ?int
    {
        $deadline = microtime(true) + $timeout;
        while (microtime(true) < $deadline) {
            $st = proc_get_status($this->proc);
            if (!$st['running']) {
                $this->exitCode ??= $st['exitcode'];

                return $this->exitCode;
            }
            usleep(10_000);
        }

        return null;
    }

    public function close(): void
    {
        if ($this->wait(0.01) === null) {
            proc_terminate($this->proc, 9);
            $this->wait(2.0);
        }
        @fclose($this->stdin);
        @fclose($this->stdout);
        proc_close($this->proc);
        @unlink($this->stderrFile);
    }
}

function pidRequest(): string
{
    // spec §2.9, byte for byte
    return (string) hex2bin('13090c0000005f0c467300007b22706964223a343234327d');
}

function stopCommand(): string
{
    return (new Frame('{"stop":true}', [], Frame::CONTROL | Frame::CODEC_JSON))->encode();
}

/** @param array<string,list<string>> $headers */
function protoTask(string $method, string $target, string $body = '', array $headers = [], array $extra = []): string
{
    $q = parse_url($target, PHP_URL_QUERY);
    $ctx = Proto::encodeRequest($extra + [
        'remoteAddr' => '127.0.0.1',
        'protocol' => 'HTTP/1.1',
        'method' => $method,
        'uri' => 'http://localhost:8080' . $target,
        'headers' => $headers,
        'rawQuery' => is_string($q) ? $q : '',
    ]);

    return (new Frame($ctx . $body, [strlen($ctx)], Frame::CODEC_PROTO))->encode();
}

function jsonTask(string $method, string $target, string $body = '', array $headers = []): string
{
    $q = parse_url($target, PHP_URL_QUERY);
    $ctx = json_encode([
        'remoteAddr' => '127.0.0.1', 'protocol' => 'HTTP/1.1', 'method' => $method,
        'uri' => 'http://localhost:8080' . $target, 'headers' => (object) $headers, 'cookies' => new stdClass(),
        'rawQuery' => is_string($q) ? $q : '', 'parsed' => false, 'uploads' => null, 'attributes' => new stdClass(),
    ], JSON_THROW_ON_ERROR);

    return (new Frame($ctx . $body, [strlen($ctx)], Frame::CODEC_JSON))->encode();
}

/** @return array{frame:Frame, status:int, headers:array<string,list<string>>, body:string} */
function readResponse(Proc $p, bool $json = false): array
{
    $f = $p->readFrame();
    if ($f->hasFlag(Frame::ERROR)) {
        return ['frame' => $f, 'status' => -1, 'headers' => [], 'body' => $f->payload];
    }
    $pl = Worker::payloadOf($f);
    if ($json) {
        $c = json_decode($pl->context, true);
        $ctx = ['status' => $c['status'] ?? 0, 'headers' => $c['headers'] ?? []];
    } else {
        $ctx = Proto::decodeResponse($pl->context);
    }

    return ['frame' => $f, 'status' => $ctx['status'], 'headers' => $ctx['headers'], 'body' => $pl->body];
}

/** PID handshake; returns true when the worker answered with its own pid. */
function handshake(Proc $p, string $label, float $timeout = TIMEOUT): bool
{
    $p->send(pidRequest());
    $f = $p->readFrame(true, $timeout);
    $ok = $f->flags === Frame::CONTROL && $f->options === [] && $f->stream === 0
        && $f->payload === json_encode(['pid' => $p->pid]);
    check("$label: PID handshake (reply {\"pid\":{$p->pid}}, flags 0x01)", $ok, bin2hex($f->encode()));

    return $ok;
}

function run(string $label, callable $fn): void
{
    try {
        $fn();
    } catch (Throwable $e) {
        check($label, false, $e::class . ': ' . $e->getMessage() . ' @ ' . $e->getFile() . ':' . $e->getLine());
    }
}

$app = ROOT . '/php/app/worker.php';

// ================================================================ app worker, proto codec
run('app worker (proto)', function () use ($app): void {
    $p = new Proc($app);
    try {
        handshake($p, 'app');

        $p->send(protoTask('GET', '/'));
        $r = readResponse($p);
        check('app /: 200 "Hello from forkline\n", flags 0x80', $r['frame']->flags === 0x80 && $r['frame']->stream === 0
            && $r['status'] === 200 && $r['body'] === "Hello from forkline\n", json_encode($r['body']));
        check('app /: Content-Type text/plain', ($r['headers']['Content-Type'] ?? []) === ['text/plain']);

        $big = random_bytes(100 * 1024);
        $p->send(protoTask('POST', '/echo', $big, ['Content-Type' => ['application/x-test']]));
        $r = readResponse($p);
        check('app /echo: 100 KB body echoed byte for byte', $r['status'] === 200 && $r['body'] === $big, 'got ' . strlen($r['body']) . ' bytes');
        check('app /echo: Content-Type copied', ($r['headers']['Content-Type'] ?? []) === ['application/x-test']);

        $p->send(protoTask('GET', '/pid'));
        $r = readResponse($p);
        check('app /pid', $r['status'] === 200 && $r['body'] === (string) $p->pid, $r['body']);

        $p->send(protoTask('GET', '/headers', '', ['Accept' => ['*/*'], 'X-Multi' => ['a', 'b']]));
        $r = readResponse($p);
        check('app /headers', $r['status'] === 200 && json_decode($r['body'], true) === ['Accept' => ['*/*'], 'X-Multi' => ['a', 'b']], $r['body']);

        $p->send(protoTask('POST', '/info?x=1&y[]=2', '{"k":"v"}', ['Content-Type' => ['application/x-www-form-urlencoded']], [
            'cookies' => ['sid' => ['abc']], 'parsed' => true, 'remoteAddr' => '10.1.2.3',
        ]));
        $r = readResponse($p);
        $info = json_decode($r['body'], true);
        check('app /info', $r['status'] === 200 && $info === [
            'method' => 'POST', 'uri' => 'http://localhost:8080/info?x=1&y[]=2', 'protocol' => 'HTTP/1.1',
            'query' => ['x' => '1', 'y' => ['2']], 'cookies' => ['sid' => 'abc'], 'remoteAddr' => '10.1.2.3',
            'parsed' => true, 'parsedBody' => ['k' => 'v'],
        ], $r['body']);

        $t = microtime(true);
        $p->send(protoTask('GET', '/sleep?ms=150'));
        $r = readResponse($p);
        check('app /sleep?ms=150', $r['body'] === 'slept 150' && microtime(true) - $t >= 0.15);

        $p->send(protoTask('GET', '/status?code=418'));
        $r = readResponse($p);
        check('app /status?code=418', $r['status'] === 418);
        $p->send(protoTask('GET', '/status?code=204'));
        $r = readResponse($p);
        check('app /status?code=204 (no body)', $r['status'] === 204 && $r['body'] === '');

        $p->send(protoTask('GET', '/error'));
        $f = $p->readFrame();
        check('app /error: ERROR frame "boom", no options', $f->encode() === hex2bin('134004000000881e11e30000626f6f6d'), bin2hex($f->encode()));

        $p->send(protoTask('GET', '/exception'));
        $f = $p->readFrame();
        check('app /exception: ERROR frame', $f->flags === Frame::ERROR && $f->options === [] && str_contains($f->payload, 'exception'));
        usleep(50_000);
        check('app /exception: logged to stderr', str_contains($p->stderr(), 'RuntimeException'));

        $p->send(protoTask('GET', '/echo-stdout'));
        $r = readResponse($p);
        check('app /echo-stdout: relay intact, 200 "ok"', $r['status'] === 200 && $r['body'] === 'ok');
        usleep(50_000);
        check('app /echo-stdout: "hello" went to stderr', str_contains($p->stderr(), "hello\n"));

        $p->send(protoTask('GET', '/stream?n=3'));
        $frames = [];
        do {
            $frames[] = $f = $p->readFrame();
        } while ($f->hasStream(Frame::STREAM));
        $bodies = array_map(fn (Frame $f) => Worker::payloadOf($f)->body, $frames);
        check('app /stream?n=3: 3 STREAM chunks + final', array_map(fn (Frame $f) => $f->stream, $frames) === [1, 1, 1, 0]
            && $bodies === ["chunk 1\n", "chunk 2\n", "chunk 3\n", ''], json_encode($bodies));
        check('app /stream: every frame flagged 0x80 with status 200', array_unique(array_map(fn (Frame $f) => $f->flags, $frames)) === [0x80]
            && Proto::decodeResponse(Worker::payloadOf($frames[1])->context)['status'] === 200);

        $p->send(protoTask('GET', '/stream?n=12'));
        $bits = [];
        do {
            $f = $p->readFrame();
            $bits[] = $f->stream;
            if ($f->hasStream(Frame::PING)) {
                $p->send((new Frame('', [], 0, Frame::PONG))->encode());
            }
        } while ($f->hasStream(Frame::STREAM));
        check('app /stream?n=12: PING on frames 6 and 11, PONGs consumed', $bits === [1, 1, 1, 1, 1, 5, 1, 1, 1, 1, 5, 1, 0], json_encode($bits));

        $p->send(protoTask('GET', '/stream?n=50&delay=20'));
        $first = $p->readFrame();
        $p->send((new Frame('', [], 0, Frame::STOP))->encode());
        $n = 1;
        $f = $first;
        while ($f->hasStream(Frame::STREAM)) {
            $f = $p->readFrame();
            $n++;
        }
        check('app /stream: server STOP ends the stream early', $n < 50 && Worker::payloadOf($f)->body === '', "frames: $n");

        $p->send(protoTask('GET', '/early-hints'));
        $h = readResponse($p);
        $r = readResponse($p);
        check('app /early-hints: 103 (STREAM) then 200', $h['status'] === 103 && $h['frame']->stream === 1
            && ($h['headers']['Link'] ?? []) === ['</a.css>; rel=preload'] && $r['status'] === 200 && $r['frame']->stream === 0);

        $p->send(protoTask('GET', '/no/such/route'));
        $r = readResponse($p);
        check('app unknown route: 404 "not found\n"', $r['status'] === 404 && $r['body'] === "not found\n");

        // idle PID request and a stray PONG are handled between tasks
        $p->send((new Frame('', [], 0, Frame::PONG))->encode());
        handshake($p, 'app (idle re-ping)');

        $p->send(stopCommand());
        check('app: CONTROL stop -> exit code 0', $p->wait() === 0, 'exit ' . var_export($p->exitCode, true) . "\n" . $p->stderr());
    } finally {
        $p->close();
    }
});

// ================================================================ app worker, JSON codec
run('app worker (json)', function () use ($app): void {
    $p = new Proc($app);
    try {
        handshake($p, 'app/json');
        $p->send(jsonTask('GET', '/'));
        $f = $p->readFrame();
        $pl = Worker::payloadOf($f);
        check('app/json /: flags 0x08, JSON context, body', $f->flags === Frame::CODEC_JSON
            && json_decode($pl->context, true) === ['status' => 200, 'headers' => ['Content-Type' => ['text/plain']]]
            && $pl->body === "Hello from forkline\n", $pl->context);
        $big = str_repeat("\x00\xff binary ", 12000);
        $p->send(jsonTask('POST', '/echo', $big, ['Content-Type' => ['application/octet-stream']]));
        $r = readResponse($p, true);
        check('app/json /echo: body and Content-Type', $r['body'] === $big && $r['headers'] === ['Content-Type' => ['application/octet-stream']]);
        $p->send(stopCommand());
        check('app/json: CONTROL stop -> exit code 0', $p->wait() === 0);
    } finally {
        $p->close();
    }
});

// ================================================================ json_codec.php
foreach (['json' => 'jsonTask', 'proto' => 'protoTask'] as $codec => $mk) {
    run("json_codec.php ($codec)", function () use ($codec, $mk): void {
        $p = new Proc(__DIR__ . '/json_codec.php');
        try {
            handshake($p, "json_codec/$codec");
            $p->send($mk('GET', '/'));
            $r = readResponse($p, $codec === 'json');
            $p->send($mk('GET', '/again'));
            $r2 = readResponse($p, $codec === 'json');
            $flags = $codec === 'json' ? 0x08 : 0x80;
            check("json_codec: reports \"$codec\" (flags 0x" . dechex($flags) . ')', $r['body'] === $codec && $r2['body'] === $codec
                && $r['frame']->flags === $flags && ($r['headers']['X-Codec'] ?? []) === [$codec], $r['body']);
            // an empty task (no context, no body) also stops the HTTP worker
            $p->send((new Frame('', [0], $flags))->encode());
            check("json_codec/$codec: empty task -> exit 0", $p->wait() === 0);
        } finally {
            $p->close();
        }
    });
}

// ================================================================ crash
run('app /exit', function () use ($app): void {
    $p = new Proc($app);
    try {
        handshake($p, 'app/exit');
        $p->send(protoTask('GET', '/exit'));
        check('app /exit: process exits 1 without a response', $p->wait() === 1 && $p->readSome(0.2) === '');
    } finally {
        $p->close();
    }
});

// ================================================================ integration-test workers
run('bad_crc.php', function (): void {
    $p = new Proc(__DIR__ . '/bad_crc.php');
    try {
        handshake($p, 'bad_crc');
        $bad = 0;
        for ($i = 0; $i < 2; $i++) {
            $p->send(protoTask('GET', '/'));
            $header = $p->readExact(12);
            $hd = Frame::decodeHeader($header);
            $rest = $p->readExact($hd['optionsSize'] + $hd['length']);
            $f = Frame::decode($header . $rest, false);
            $bad += (!$hd['crcValid'] && $f->payload === 'bad crc' && $f->options === [0]) ? 1 : 0;
        }
        check('bad_crc: every task answer carries a wrong CRC', $bad === 2);
        $p->send(stopCommand());
        check('bad_crc: exits 0 on stop', $p->wait() === 0);
    } finally {
        $p->close();
    }
});

run('garbage.php', function (): void {
    $p = new Proc(__DIR__ . '/garbage.php');
    try {
        handshake($p, 'garbage');
        $p->send(protoTask('GET', '/'));
        check('garbage: writes "hello world garbage" on the first task', $p->readExact(19) === 'hello world garbage');
        $p->send(stopCommand());
        check('garbage: exits 0 on stop', $p->wait() === 0);
    } finally {
        $p->close();
    }
});

run('stop_after_error.php', function (): void {
    $p = new Proc(__DIR__ . '/stop_after_error.php');
    try {
        handshake($p, 'stop_after_error');
        $p->send(protoTask('GET', '/a'));
        $r = readResponse($p);
        check('stop_after_error: task 1 answered 200', $r['status'] === 200 && $r['body'] === "ok 1\n");
        $p->send(protoTask('GET', '/b'));
        $e = $p->readFrame();
        $s = $p->readFrame();
        check('stop_after_error: task 2 -> ERROR frame', $e->flags === Frame::ERROR && $e->options === []);
        check('stop_after_error: then the §3.6 stop data frame', $s->encode() === hex2bin('14000d000000f339efdb00000d0000007b2273746f70223a747275657d'), bin2hex($s->encode()));
        $p->send(protoTask('GET', '/c'));
        $r = readResponse($p);
        check('stop_after_error: task 3 answered 200', $r['status'] === 200 && $r['body'] === "ok 3\n");
        $p->send(stopCommand());
        check('stop_after_error: exits 0 on stop', $p->wait() === 0);
    } finally {
        $p->close();
    }
});

run('slow_boot.php', function (): void {
    $t = microtime(true);
    $p = new Proc(__DIR__ . '/slow_boot.php', ['BOOT_MS' => '400']);
    try {
        handshake($p, 'slow_boot');
        check('slow_boot: handshake delayed by BOOT_MS=400', microtime(true) - $t >= 0.4, sprintf('%.3fs', microtime(true) - $t));
        $p->send(protoTask('GET', '/'));
        $r = readResponse($p);
        check('slow_boot: then serves the app', $r['body'] === "Hello from forkline\n");
        $p->send(stopCommand());
        check('slow_boot: exits 0 on stop', $p->wait() === 0);
    } finally {
        $p->close();
    }
});

echo "php drive: $passed passed, $failed failed\n";
exit($failed > 0 ? 1 : 0);
