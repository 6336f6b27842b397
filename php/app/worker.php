<?php

/**
 * forkline example application (the worker that `make serve` runs).
 *
 * A long-lived php-cli worker speaking the goridge protocol with the
 * dependency-free library in php/src (no Composer, no extensions).
 *
 * Run under forkline: point the pool command at this file, e.g.
 *
 *     make serve          # or: ./forkline -c conf/forkline.yaml
 *     # server.command: "php php/app/worker.php"   relay: pipes (default)
 *     curl http://127.0.0.1:8080/
 *
 * Run under RoadRunner (wire-compatible; the worker auto-detects the JSON or
 * protobuf HTTP codec), with a .rr.yaml such as:
 *
 *     version: "3"
 *     server:
 *       command: "php php/app/worker.php"
 *       relay: pipes              # or tcp://127.0.0.1:7000, unix:///tmp/rr.sock
 *     http:
 *       address: 127.0.0.1:8080
 *       pool: { num_workers: 2 }
 *
 *     rr serve -c .rr.yaml
 *
 * Routes:
 *   /                 200 "Hello from forkline\n"
 *   /pid              the worker pid
 *   /echo             the raw request body, Content-Type copied from the request
 *   /headers          JSON of the request headers
 *   /info             JSON of method, uri, protocol, query, cookies, remoteAddr, parsed body
 *   /sleep?ms=N       sleeps N ms, then "slept N"
 *   /status?code=N    responds with status N
 *   /error            worker ERROR frame "boom"
 *   /exception        throws; answered through error() (500 from the server)
 *   /exit             exit(1) mid-request (simulated crash)
 *   /echo-stdout      echo "hello" (goes to stderr) and responds "ok"
 *   /stream?n=3       streamed response of n chunks "chunk 1\n" .. "chunk n\n"
 *                     (optional &delay=ms between chunks)
 *   /early-hints      103 with a Link header, then 200 "hints sent\n"
 *   /upload           JSON: every uploaded file (field path => name, mime, size, error,
 *                     tmpName, sha1 of the temp file, exists) and the parsed form body
 *   /header?name=N&value=V  responds with that header (value[]=a&value[]=b: several values;
 *                     &trailer=T also sends T as a trailer), for header injection tests
 *   anything else     404 "not found\n"
 */

declare(strict_types=1);

require __DIR__ . '/../src/autoload.php';

use Forkline\HttpWorker;
use Forkline\Http\Request;
use Forkline\RelayException;

$http = HttpWorker::create();

/** Integer query parameter, or $default when absent or not numeric. */
function intParam(Request $req, string $key, int $default): int
{
    $v = $req->query[$key] ?? null;

    return is_numeric($v) ? (int) $v : $default;
}

/**
 * Route one request; returns nothing, always answers through $http.
 * '/' comes first and touches nothing it does not need: it is the route the
 * benchmarks measure, so no per-request closures or query parsing before it.
 */
$handle = static function (Request $req) use ($http): void {
    $path = $req->path();
    if ($path === '/') {
        $http->respond(200, "Hello from forkline\n", ['Content-Type' => 'text/plain']);
        return;
    }
    $text = ['Content-Type' => 'text/plain; charset=utf-8'];
    $json = ['Content-Type' => 'application/json'];
    $jsonFlags = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE | JSON_THROW_ON_ERROR;
    $q = $req->query;

    switch ($path) {

        case '/pid':
            $http->respond(200, (string) getmypid(), $text);
            return;

        case '/echo':
            $type = $req->header('Content-Type');
            $http->respond(200, $req->body, $type !== null ? ['Content-Type' => $type] : []);
            return;

        case '/headers':
            $http->respond(200, json_encode((object) $req->headers, $jsonFlags) . "\n", $json);
            return;

        case '/info':
            $info = [
                'method' => $req->method,
                'uri' => $req->uri,
                'protocol' => $req->protocol,
                'query' => (object) $req->query,
                'cookies' => (object) $req->cookies,
                'remoteAddr' => $req->remoteAddr,
                'parsed' => $req->parsed,
                'parsedBody' => $req->parsedBody,
            ];
            $http->respond(200, json_encode($info, $jsonFlags) . "\n", $json);
            return;

        case '/sleep':
            $ms = max(0, intParam($req, 'ms', 0));
            usleep($ms * 1000);
            $http->respond(200, "slept $ms", $text);
            return;

        case '/status':
            $code = intParam($req, 'code', 200);
            $noBody = ($code >= 100 && $code < 200) || $code === 204 || $code === 304;
            $http->respond($code, $noBody ? '' : "status $code\n", $noBody ? [] : $text);
            return;

        case '/error':
            $http->error('boom');
            return;

        case '/exception':
            throw new \RuntimeException('exception requested by /exception');

        case '/exit':
            fwrite(STDERR, "worker " . getmypid() . ": /exit requested, exiting with 1\n");
            exit(1);

        case '/echo-stdout':
            echo "hello\n"; // lands on stderr thanks to the worker's output buffer
            $http->respond(200, 'ok', $text);
            return;

        case '/stream':
            $n = max(0, intParam($req, 'n', 3));
            $delay = max(0, intParam($req, 'delay', 0));
            $chunks = (static function () use ($n, $delay): \Generator {
                for ($i = 1; $i <= $n; $i++) {
                    if ($i > 1 && $delay > 0) {
                        usleep($delay * 1000);
                    }
                    yield "chunk $i\n";
                }
            })();
            $http->respondStream(200, $chunks, $text);
            return;

        case '/upload':
            $files = [];
            $walk = static function (array $tree, string $path) use (&$walk, &$files): void {
                foreach ($tree as $key => $node) {
                    $p = $path === '' ? (string) $key : $path . '[' . $key . ']';
                    if (is_array($node) && array_key_exists('tmpName', $node)) {
                        $tmp = (string) $node['tmpName'];
                        $ok = $tmp !== '' && is_file($tmp);
                        $files[$p] = $node + [
                            'exists' => $ok,
                            'sha1' => $ok ? sha1_file($tmp) : null,
                            'onDisk' => $ok ? filesize($tmp) : null,
                        ];
                    } elseif (is_array($node)) {
                        $walk($node, $p);
                    }
                }
            };
            $walk($req->uploads, '');
            $out = ['files' => (object) $files, 'parsed' => $req->parsed, 'body' => $req->parsedBody];
            $http->respond(200, json_encode($out, $jsonFlags) . "\n", $json);
            return;

        case '/header':
            $v = $q['value'] ?? '';
            $headers = [(string) ($q['name'] ?? 'X-Test') => is_array($v) ? array_values(array_map('strval', $v)) : [(string) $v]];
            if (isset($q['trailer']) && is_string($q['trailer'])) {
                $headers['Trailer'] = [$q['trailer']];
                $headers[$q['trailer']] = ['trailer-value'];
            }
            $http->respond(200, "ok\n", $headers);
            return;

        case '/early-hints':
            $http->respond(103, '', ['Link' => ['</a.css>; rel=preload']], false);
            $http->respond(200, "hints sent\n", $text);
            return;

        default:
            $http->respond(404, "not found\n", $text);
    }
};

while (true) {
    try {
        $req = $http->waitRequest();
    } catch (RelayException $e) {
        if ($e->isClosed()) {
            exit(0); // server closed the relay without a stop frame
        }
        fwrite(STDERR, 'worker ' . getmypid() . ': relay error: ' . $e->getMessage() . "\n");
        exit(1);
    }
    if ($req === null) {
        break; // stop requested
    }

    try {
        $handle($req);
    } catch (RelayException $e) {
        fwrite(STDERR, 'worker ' . getmypid() . ': relay error: ' . $e->getMessage() . "\n");
        exit(1);
    } catch (\Throwable $e) {
        fwrite(STDERR, 'worker ' . getmypid() . ': ' . $e::class . ': ' . $e->getMessage()
            . ' in ' . $e->getFile() . ':' . $e->getLine() . "\n" . $e->getTraceAsString() . "\n");
        $http->error($e->getMessage());
    }
}

exit(0);
