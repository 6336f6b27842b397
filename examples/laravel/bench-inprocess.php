<?php

/*
 * In-process benchmark of the forkline worker's request path, without HTTP or IPC: boots this
 * app through the bridge (php/src/Laravel) on a relay made of two php://temp streams, then
 * drives N identical requests through Bridge::handle(): the http.v1 decode, the request built,
 * the kernel, the response frame, terminate() and the state reset, as in a real worker.
 *
 *   php -d opcache.enable_cli=1 [same -d flags as the server] bench-inprocess.php [ROUTE] [N]
 *
 * ROUTE defaults to /, N to 20000. `/web` and `/session` are sent as a returning visitor (the
 * cookies of a first visit). Prints the CPU time per request (getrusage: user + system, the
 * figure the machine's load disturbs least) and the wall time. Set SESSION_FILES to keep the
 * session files out of storage/.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';
require __DIR__ . '/bootstrap/autoload.php';

use Forkline\Frame;
use Forkline\Http\Proto;
use Forkline\HttpWorker;
use Forkline\Relay;
use Forkline\Worker;

$route = $argv[1] ?? '/';
$n = max(1, (int) ($argv[2] ?? 20000));

$in = fopen('php://temp', 'w+b');
$out = fopen('php://temp', 'w+b');
$http = new HttpWorker(new Worker(Relay::fromStreams($in, $out)));
$bridge = Forkline\Laravel\Bridge::boot(__DIR__, $http);

/** A request frame as forkline's reactor sends it for `GET $target` (wrk: Host and cookies only). */
function requestFrame(string $target, array $cookies): string
{
    $headers = [];
    $map = [];
    if ($cookies !== []) {
        $pairs = [];
        foreach ($cookies as $name => $value) {
            $pairs[] = "$name=$value";
            $map[$name] = [rawurldecode($value)];
        }
        $headers['Cookie'] = [implode('; ', $pairs)];
    }
    $ctx = Proto::encodeRequest([
        'remoteAddr' => '127.0.0.1', 'protocol' => 'HTTP/1.1', 'method' => 'GET',
        'uri' => 'http://127.0.0.1:8080' . $target, 'headers' => $headers, 'cookies' => $map,
        'rawQuery' => (string) parse_url($target, PHP_URL_QUERY),
    ]);

    return (new Frame($ctx, [strlen($ctx)], Frame::CODEC_PROTO, 0))->encode();
}

/** Serves the frames in $frames; returns the last response's [status, headers, body]. */
function serve($bridge, $http, $in, $out, string $frames, int $count): array
{
    ftruncate($in, 0);
    rewind($in);
    fwrite($in, $frames);
    rewind($in);
    for ($i = 0; $i < $count; $i++) {
        ftruncate($out, 0); // keep only the last response
        rewind($out);
        $bridge->handle($http->waitRequest());
    }
    rewind($out);
    $frame = Frame::decode((string) stream_get_contents($out));
    $split = $frame->options[0] ?? 0;
    $resp = Proto::decodeResponse(substr($frame->payload, 0, $split));

    return [$resp['status'], $resp['headers'], substr($frame->payload, $split)];
}

$cookies = [];
if ($route === '/web' || $route === '/session') {
    [, $headers] = serve($bridge, $http, $in, $out, requestFrame($route, []), 1);
    foreach ($headers['Set-Cookie'] ?? [] as $line) {
        [$pair] = explode(';', $line, 2);
        [$name, $value] = explode('=', $pair, 2);
        $cookies[$name] = $value;
    }
}
$frame = requestFrame($route, $cookies);
[$status] = serve($bridge, $http, $in, $out, str_repeat($frame, 200), 200); // warm-up
if ($status !== 200) {
    fwrite(STDERR, "bench-inprocess: $route answered $status\n");
    exit(1);
}

$frames = str_repeat($frame, $n);
$r0 = getrusage();
$t0 = hrtime(true);
[$status] = serve($bridge, $http, $in, $out, $frames, $n);
$t1 = hrtime(true);
$r1 = getrusage();
$cpu = static fn (array $r): float => $r['ru_utime.tv_sec'] * 1e6 + $r['ru_utime.tv_usec'] + $r['ru_stime.tv_sec'] * 1e6 + $r['ru_stime.tv_usec'];
$sys = static fn (array $r): float => $r['ru_stime.tv_sec'] * 1e6 + $r['ru_stime.tv_usec'];
printf(
    "%s: %d requests, CPU %.1f µs/request (system %.1f), wall %.1f µs/request, last status %d, heap %d bytes\n",
    $route, $n, ($cpu($r1) - $cpu($r0)) / $n, ($sys($r1) - $sys($r0)) / $n, ($t1 - $t0) / 1e3 / $n, $status, memory_get_usage(),
);
exit($status === 200 ? 0 : 1);
