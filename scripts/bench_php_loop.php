<?php

/**
 * CPU per request of the PHP worker library (issue 9), without the C server.
 *
 * Plays the forkline reactor against one long-lived php-cli worker: PID handshake, then N
 * request frames one at a time (the bytes the reactor really sends, captured from forkline),
 * each answered before the next goes out, then the CONTROL stop. Prints the worker's
 * user+sys CPU per request, measured after a warm-up, so boot and compilation do not count.
 *
 *   php scripts/bench_php_loop.php                      # real php/app/worker.php over pipes
 *   php scripts/bench_php_loop.php --mode=inproc        # library loop only, php://memory relay
 *   php scripts/bench_php_loop.php --app=/tmp/old/php/app/worker.php   # compare another copy
 *   options: --n=200000 --req=wrk|curl|browser --mode=pipes|inproc --src=DIR (inproc library)
 *            --relay=socket|pipe (pipes mode: one socket pair as forkline spawns workers, or two
 *            pipes as RoadRunner does) --php=BINARY --runs=1
 *
 * pipes:  the worker is exactly what `make bench` runs (php -d opcache.enable_cli=1 worker.php,
 *         relay on its STDIN/STDOUT, a socket pair by default like forkline's); its CPU is read from /proc/PID/stat (10 ms ticks: use a
 *         large N). Includes the read/write system calls and wake-ups of a real worker.
 * inproc: a child php runs HttpWorker's loop with the '/' route over php://memory streams that
 *         hold all N frames up front: pure PHP CPU (no system calls), measured with getrusage.
 */

declare(strict_types=1);

const ROOT = __DIR__ . '/..';

use Forkline\Frame;
use Forkline\Http\Proto;

$opt = getopt('', ['n:', 'req:', 'mode:', 'app:', 'src:', 'php:', 'runs:', 'relay:', 'inproc-child', 'frames:']);

if (isset($opt['inproc-child'])) {
    inprocChild((string) $opt['src'], (string) $opt['frames'], (int) $opt['n']);
    exit(0);
}
// the parent encodes frames and checks answers with this tree's library (the child loads --src)
require ROOT . '/php/src/autoload.php';

$n = (int) ($opt['n'] ?? 200000);
$reqKind = (string) ($opt['req'] ?? 'wrk');
$mode = (string) ($opt['mode'] ?? 'pipes');
$app = realpath((string) ($opt['app'] ?? ROOT . '/php/app/worker.php'));
$src = realpath((string) ($opt['src'] ?? ROOT . '/php/src'));
$php = (string) ($opt['php'] ?? PHP_BINARY);
$runs = max(1, (int) ($opt['runs'] ?? 1));
$relay = (string) ($opt['relay'] ?? 'socket');
$frame = requestFrame($reqKind);

for ($r = 0; $r < $runs; $r++) {
    $us = $mode === 'inproc' ? runInproc($php, (string) $src, $frame, $n) : runPipes($php, (string) $app, $frame, $n, $relay === 'socket');
    printf("%s req=%s n=%d %s: %.2f us CPU/request (user+sys of the worker)\n",
        $mode === 'inproc' ? 'inproc' : "pipes($relay)", $reqKind, $n, $mode === 'inproc' ? $src : $app, $us);
}

/** One request frame exactly as forkline's reactor encodes it (captured, spec §6.3). */
function requestFrame(string $kind): string
{
    $base = ['remoteAddr' => '127.0.0.1', 'protocol' => 'HTTP/1.1', 'method' => 'GET', 'uri' => 'http://127.0.0.1:43307/'];
    $ctx = match ($kind) {
        // wrk: "GET / HTTP/1.1" + Host only; Host becomes the URI's authority, no header left
        'wrk' => hex2bin('0a093132372e302e302e311208485454502f312e311a034745542217687474703a2f2f3132372e302e302e313a34333330372f'),
        // curl: User-Agent and Accept
        'curl' => hex2bin('0a093132372e302e302e311208485454502f312e311a034745542217687474703a2f2f3132372e302e302e313a34333330372f'
            . '2a1b0a0a557365722d4167656e74120d0a0b6375726c2f372e38382e312a0f0a0641636365707412050a032a2f2a'),
        // a browser: a dozen headers, two cookies, a query string
        'browser' => Proto::encodeRequest($base + [
            'uri' => 'http://127.0.0.1:43307/?utm_source=x&page=2',
            'rawQuery' => 'utm_source=x&page=2',
            'headers' => [
                'User-Agent' => ['Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0'],
                'Accept' => ['text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8'],
                'Accept-Language' => ['en-US,en;q=0.5'],
                'Accept-Encoding' => ['gzip, deflate, br'],
                'Connection' => ['keep-alive'],
                'Cookie' => ['sid=abcdef0123456789; theme=dark'],
                'Upgrade-Insecure-Requests' => ['1'],
                'Sec-Fetch-Dest' => ['document'],
                'Sec-Fetch-Mode' => ['navigate'],
                'Sec-Fetch-Site' => ['none'],
                'Sec-Fetch-User' => ['?1'],
                'Cache-Control' => ['max-age=0'],
            ],
            'cookies' => ['sid' => ['abcdef0123456789'], 'theme' => ['dark']],
        ]),
        default => throw new InvalidArgumentException("unknown --req=$kind (wrk, curl, browser)"),
    };

    return (new Frame($ctx, [strlen($ctx)], Frame::CODEC_PROTO))->encode();
}

function pidFrame(): string
{
    return (new Frame('{"pid":' . getmypid() . '}', [], Frame::CONTROL | Frame::CODEC_JSON))->encode();
}

function stopFrame(): string
{
    return (new Frame('{"stop":true}', [], Frame::CONTROL | Frame::CODEC_JSON))->encode();
}

/** Read one whole frame from a blocking stream. */
function readFrame($in): string
{
    $h = '';
    while (strlen($h) < 12) {
        $c = fread($in, 12 - strlen($h));
        if ($c === '' || $c === false) {
            throw new RuntimeException('worker closed the relay' . ($h === '' ? '' : ' mid-header'));
        }
        $h .= $c;
    }
    $rest = 4 * ((ord($h[0]) & 0x0F) - 3) + unpack('V', $h, 2)[1];
    $b = '';
    while (strlen($b) < $rest) {
        $c = fread($in, $rest - strlen($b));
        if ($c === '' || $c === false) {
            throw new RuntimeException('worker closed the relay mid-frame');
        }
        $b .= $c;
    }

    return $h . $b;
}

/** utime+stime of a process in seconds (/proc, clock ticks of 10 ms). */
function procCpu(int $pid): float
{
    $stat = (string) file_get_contents("/proc/$pid/stat");
    $f = explode(' ', substr($stat, strrpos($stat, ')') + 2));

    return ((int) $f[11] + (int) $f[12]) / 100.0;
}

function checkHello(string $resp): void
{
    $f = Frame::decode($resp);
    $ctxLen = $f->options[0] ?? -1;
    $status = Proto::decodeResponse(substr($f->payload, 0, $ctxLen))['status'];
    if ($f->flags !== Frame::CODEC_PROTO || $status !== 200 || substr($f->payload, $ctxLen) !== "Hello from forkline\n") {
        throw new RuntimeException('unexpected response: ' . bin2hex($resp));
    }
}

/**
 * @param bool $socket one socket pair as the worker's STDIN and STDOUT, as forkline spawns it
 *                     (relay/spawn.c); false: two pipes, as RoadRunner does
 */
function runPipes(string $php, string $app, string $frame, int $n, bool $socket): float
{
    $cmd = [$php, '-d', 'opcache.enable_cli=1', $app];
    if ($socket) {
        [$mine, $theirs] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $p = proc_open($cmd, [0 => $theirs, 1 => $theirs, 2 => STDERR], $pipes);
        fclose($theirs);
        $toWorker = $fromWorker = $mine;
    } else {
        $p = proc_open($cmd, [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => STDERR], $pipes);
        [$toWorker, $fromWorker] = $pipes;
    }
    if (!is_resource($p)) {
        throw new RuntimeException("cannot start $app");
    }
    $pid = proc_get_status($p)['pid'];
    fwrite($toWorker, pidFrame());
    readFrame($fromWorker);
    fwrite($toWorker, $frame);
    $first = readFrame($fromWorker);
    checkHello($first);
    $warm = min(20000, intdiv($n, 10));
    $t0 = 0.0;
    for ($i = 1; $i < $n; $i++) {
        if ($i === $warm) {
            $t0 = procCpu($pid);
        }
        fwrite($toWorker, $frame);
        if (readFrame($fromWorker) !== $first) {
            throw new RuntimeException("response $i differs from the first");
        }
    }
    $t1 = procCpu($pid);
    fwrite($toWorker, stopFrame());
    if (!$socket) {
        fclose($toWorker);
    }
    stream_get_contents($fromWorker);
    proc_close($p);

    return 1e6 * ($t1 - $t0) / ($n - $warm);
}

function runInproc(string $php, string $src, string $frame, int $n): float
{
    $tmp = tempnam(sys_get_temp_dir(), 'flbench');
    file_put_contents($tmp, pidFrame() . str_repeat($frame, $n) . stopFrame());
    $out = [];
    exec(escapeshellarg($php) . ' -d opcache.enable_cli=1 -d memory_limit=-1 ' . escapeshellarg(__FILE__)
        . ' --inproc-child --src=' . escapeshellarg($src) . ' --frames=' . escapeshellarg($tmp) . " --n=$n", $out, $rc);
    unlink($tmp);
    if ($rc !== 0 || !is_numeric(end($out))) {
        throw new RuntimeException("inproc child failed ($rc): " . implode("\n", $out));
    }

    return (float) end($out);
}

/** The worker side of --mode=inproc: the library's HTTP loop, '/' route only. */
function inprocChild(string $src, string $framesFile, int $n): void
{
    require_once $src . '/autoload.php';
    $in = fopen('php://memory', 'w+b');
    fwrite($in, (string) file_get_contents($framesFile));
    rewind($in);
    $out = fopen('php://memory', 'w+b');
    $http = new Forkline\HttpWorker(new Forkline\Worker(Forkline\Relay::fromStreams($in, $out)));
    $warm = min(20000, intdiv($n, 10));
    $t0 = 0.0;
    $i = 0;
    while (($req = $http->waitRequest()) !== null) {
        if (++$i === $warm) {
            $t0 = cpuNow();
        }
        if ($req->path() === '/') {
            $http->respond(200, "Hello from forkline\n", ['Content-Type' => 'text/plain']);
        } else {
            $http->respond(404, "not found\n");
        }
        if (($i & 0x3FFF) === 0) {
            ftruncate($out, 0); // keep the output stream small
            rewind($out);
        }
    }
    $t1 = cpuNow();
    if ($i !== $n) {
        fwrite(STDERR, "handled $i of $n requests\n");
        exit(1);
    }
    echo 1e6 * ($t1 - $t0) / ($n - $warm), "\n";
}

function cpuNow(): float
{
    $u = getrusage();

    return $u['ru_utime.tv_sec'] + $u['ru_utime.tv_usec'] / 1e6 + $u['ru_stime.tv_sec'] + $u['ru_stime.tv_usec'] / 1e6;
}
