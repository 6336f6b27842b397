<?php

/**
 * Self-test of the Forkline PHP worker library against the hex vectors of
 * /work/shared/spec/goridge-and-worker-protocol.md (§2.9, §3.6, §4, §6.3,
 * §6.6, §6.7, §7.2) plus behavioural checks (PID handshake, stop, short
 * reads, codec detection, streaming, protobuf robustness).
 *
 *   php tests/php/selftest.php
 *
 * Last line: "php selftest: N passed, M failed"; exit status 1 on failure.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';

use Forkline\Frame;
use Forkline\Http\Proto;
use Forkline\Http\Request;
use Forkline\HttpWorker;
use Forkline\Payload;
use Forkline\ProtocolException;
use Forkline\Relay;
use Forkline\RelayException;
use Forkline\Worker;

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

function checkBytes(string $name, string $expected, string $actual): void
{
    check($name, $expected === $actual, 'expected ' . bin2hex($expected) . "\n       actual   " . bin2hex($actual));
}

function checkEq(string $name, mixed $expected, mixed $actual): void
{
    check($name, $expected === $actual, 'expected ' . var_export($expected, true) . ', actual ' . var_export($actual, true));
}

function checkThrows(string $name, string $class, callable $fn): void
{
    try {
        $fn();
        check($name, false, "no $class thrown");
    } catch (\Throwable $e) {
        check($name, $e instanceof $class, 'threw ' . $e::class . ': ' . $e->getMessage());
    }
}

// an unexpected exception aborts the run but still reports a failure summary
set_exception_handler(static function (\Throwable $e): void {
    global $passed, $failed;
    $failed++;
    echo 'FAIL - uncaught ' . $e::class . ': ' . $e->getMessage() . ' @ ' . $e->getFile() . ':' . $e->getLine() . "\n";
    echo "php selftest: $passed passed, $failed failed\n";
    exit(1);
});

/** Hex dump lines ("0000  13 09 ...  |...|") or plain hex to bytes. */
function hx(string $dump): string
{
    $hex = '';
    foreach (explode("\n", trim($dump)) as $line) {
        $line = preg_replace('/\|.*$/', '', $line);
        $line = preg_replace('/^\s*[0-9a-f]{4}\s\s/', '', (string) $line);
        $hex .= preg_replace('/[^0-9a-f]/i', '', (string) $line);
    }

    return (string) hex2bin($hex);
}

/** @return array{0: Relay, 1: resource, 2: resource} relay reading $input, plus in/out streams */
function memRelay(string $input = ''): array
{
    $in = fopen('php://memory', 'w+b');
    $out = fopen('php://memory', 'w+b');
    fwrite($in, $input);
    rewind($in);

    return [Relay::fromStreams($in, $out), $in, $out];
}

function written($out): string
{
    rewind($out);

    return (string) stream_get_contents($out);
}

/** Stream wrapper that hands out at most 1..3 bytes per read (short-read test). */
final class ShortReadStream
{
    public static string $data = '';
    private int $pos = 0;
    public mixed $context;

    public function stream_open(string $path, string $mode, int $options, ?string &$opened): bool
    {
        $this->pos = 0;

        return true;
    }

    public function stream_read(int $count): string|false
    {
        $n = min($count, 1 + ($this->pos % 3));
        $s = substr(self::$data, $this->pos, $n);
        $this->pos += strlen($s);

        return $s;
    }

    public function stream_eof(): bool
    {
        return $this->pos >= strlen(self::$data);
    }

    public function stream_write(string $data): int
    {
        return strlen($data);
    }

    public function stream_stat(): array
    {
        return [];
    }

    public function stream_set_option(int $option, int $arg1, ?int $arg2): bool
    {
        return false;
    }
}

// ---------------------------------------------------------------- §2.5 CRC

checkEq('crc32("123456789") check value', 0xCBF43926, crc32('123456789'));
checkEq('§2.5 CRC of PID request header', 0x73460C5F, Frame::crc(hx('13 09 0c 00 00 00')));

// ---------------------------------------------------------------- §2.9 frames

$vPidReq = hx('
0000  13 09 0c 00 00 00 5f 0c 46 73 00 00 7b 22 70 69  |......_.Fs..{"pi|
0010  64 22 3a 34 32 34 32 7d                          |d":4242}|');
$vPidReply = hx('
0000  13 01 0d 00 00 00 fb 20 8a fb 00 00 7b 22 70 69  |....... ....{"pi|
0010  64 22 3a 31 32 33 34 35 7d                       |d":12345}|');
$vStopCmd = hx('
0000  13 09 0d 00 00 00 3a 6b fa cb 00 00 7b 22 73 74  |......:k....{"st|
0010  6f 70 22 3a 74 72 75 65 7d                       |op":true}|');
$vError = hx('0000  13 40 04 00 00 00 88 1e 11 e3 00 00 62 6f 6f 6d  |.@..........boom|');
$vPong = hx('13 00 00 00 00 00 96 d1 80 34 08 00');
$vStreamStop = hx('13 00 00 00 00 00 96 d1 80 34 02 00');

checkBytes('§2.9 encode PID request', $vPidReq, (new Frame('{"pid":4242}', [], Frame::CONTROL | Frame::CODEC_JSON))->encode());
checkBytes('§2.9 encode PID reply', $vPidReply, (new Frame('{"pid":12345}', [], Frame::CONTROL))->encode());
checkBytes('§2.9 encode stop command', $vStopCmd, (new Frame('{"stop":true}', [], 0x09))->encode());
checkBytes('§2.9 encode worker error', $vError, (new Frame('boom', [], Frame::ERROR))->encode());
checkBytes('§2.9 encode PONG', $vPong, (new Frame('', [], 0, Frame::PONG))->encode());
checkBytes('§2.9 encode stream STOP', $vStreamStop, (new Frame('', [], 0, Frame::STOP))->encode());

$f = Frame::decode($vPidReq);
check('§2.9 decode PID request', $f->flags === 0x09 && $f->options === [] && $f->payload === '{"pid":4242}' && $f->stream === 0);
$f = Frame::decode($vPidReply);
check('§2.9 decode PID reply', $f->flags === 0x01 && $f->payload === '{"pid":12345}');
$f = Frame::decode($vError);
check('§2.9 decode error', $f->hasFlag(Frame::ERROR) && $f->payload === 'boom' && $f->options === []);
$f = Frame::decode($vPong);
check('§2.9 decode PONG', $f->hasStream(Frame::PONG) && $f->payload === '' && $f->flags === 0);
$f = Frame::decode($vStreamStop);
check('§2.9 decode STOP', $f->hasStream(Frame::STOP) && !$f->hasStream(Frame::PONG));

$h = Frame::decodeHeader($vPidReq);
check('decodeHeader fields', $h['version'] === 1 && $h['hl'] === 3 && $h['length'] === 12 && $h['crc'] === 0x73460C5F && $h['crcValid']);
$bad = $vPidReq;
$bad[6] = "\x00";
checkThrows('decode rejects a bad CRC', ProtocolException::class, fn () => Frame::decode($bad));
check('decode without CRC check accepts it', Frame::decode($bad, false)->payload === '{"pid":4242}');
$badHl = $vPidReq;
$badHl[0] = "\x12";
checkThrows('decodeHeader rejects HL < 3', ProtocolException::class, fn () => Frame::decodeHeader($badHl));
$badHl[0] = "\x1e";
checkThrows('decodeHeader rejects HL > 13', ProtocolException::class, fn () => Frame::decodeHeader($badHl));
checkThrows('encode rejects 11 options', ProtocolException::class, fn () => (new Frame('', range(1, 11)))->encode());
checkThrows('decode rejects truncated frame', ProtocolException::class, fn () => Frame::decode(substr($vPidReq, 0, 15)));
$ten = new Frame('x', range(1, 10), 0x80, 0x01);
$rt = Frame::decode($ten->encode());
check('10 options round-trip (HL=13)', ord($ten->encode()[0]) === 0x1d && $rt->options === range(1, 10) && $rt->payload === 'x' && $rt->stream === 1);

// ---------------------------------------------------------------- §3.6 stop frame

$vStopData = hx('
0000  14 00 0d 00 00 00 f3 39 ef db 00 00 0d 00 00 00  |.......9........|
0010  7b 22 73 74 6f 70 22 3a 74 72 75 65 7d           |{"stop":true}|');
[$relay, , $out] = memRelay();
(new Worker($relay))->stop();
checkBytes('§3.6 Worker::stop() frame', $vStopData, written($out));

[$relay, , $out] = memRelay();
(new Worker($relay))->error('boom');
checkBytes('Worker::error("boom") = §2.9 error frame', $vError, written($out));

// ---------------------------------------------------------------- §4 jobs task

$vJob = hx('
0000  14 04 46 00 00 00 0f 40 7a 62 00 00 44 00 00 00  |..F....@zb..D...|
0010  7b 22 69 64 22 3a 22 31 22 2c 22 6a 6f 62 22 3a  |{"id":"1","job":|
0020  22 4a 22 2c 22 64 72 69 76 65 72 22 3a 22 6d 65  |"J","driver":"me|
0030  6d 6f 72 79 22 2c 22 68 65 61 64 65 72 73 22 3a  |mory","headers":|
0040  6e 75 6c 6c 2c 22 70 69 70 65 6c 69 6e 65 22 3a  |null,"pipeline":|
0050  22 70 22 7d 68 69                                |"p"}hi|');
[$relay] = memRelay($vJob);
$p = (new Worker($relay))->waitPayload();
check('§4 jobs task: context/body split', $p !== null
    && $p->context === '{"id":"1","job":"J","driver":"memory","headers":null,"pipeline":"p"}' && $p->body === 'hi');
checkBytes('§4 jobs task re-encodes', $vJob, (new Frame($p->context . $p->body, [strlen($p->context)], Frame::CODEC_RAW))->encode());

$vAck = hx('
0000  14 00 14 00 00 00 e6 21 fe f6 00 00 00 00 00 00  |.......!........|
0010  7b 22 74 79 70 65 22 3a 32 2c 22 64 61 74 61 22  |{"type":2,"data"|
0020  3a 5b 5d 7d                                      |:[]}|');
[$relay, , $out] = memRelay();
(new Worker($relay))->respond(new Payload('{"type":2,"data":[]}'));
checkBytes('§7.2 ACK frame via Worker::respond', $vAck, written($out));

// ---------------------------------------------------------------- worker loop

// PID request, PONG, stream STOP, task, CONTROL stop
$task = (new Frame('ctxbody', [3], Frame::CODEC_PROTO))->encode();
[$relay, , $out] = memRelay($vPidReq . $vPong . $vStreamStop . $task . $vStopCmd);
$w = new Worker($relay);
$p = $w->waitPayload();
$expectReply = (new Frame('{"pid":' . getmypid() . '}', [], Frame::CONTROL))->encode();
checkBytes('PID request answered with CONTROL {"pid":getmypid()}', $expectReply, written($out));
check('PONG and STOP skipped, task delivered', $p !== null && $p->context === 'ctx' && $p->body === 'body');
check('CONTROL stop -> waitPayload() returns null', $w->waitPayload() === null && $w->isStopRequested());

[$relay] = memRelay('');
checkThrows('EOF at frame boundary -> RelayException(CLOSED)', RelayException::class, function () use ($relay): void {
    try {
        (new Worker($relay))->waitPayload();
    } catch (RelayException $e) {
        if (!$e->isClosed()) {
            throw new \LogicException('not CLOSED');
        }
        throw $e;
    }
});
[$relay] = memRelay(substr($task, 0, 14));
checkThrows('EOF mid-frame -> RelayException', RelayException::class, fn () => (new Worker($relay))->waitPayload());
[$relay] = memRelay((new Frame('{"foo":1}', [], 0x09))->encode());
checkThrows('unknown control -> ProtocolException', ProtocolException::class, fn () => (new Worker($relay))->waitPayload());
[$relay] = memRelay((new Frame('not json', [], 0x09))->encode());
checkThrows('non-JSON control -> ProtocolException', ProtocolException::class, fn () => (new Worker($relay))->waitPayload());
[$relay] = memRelay((new Frame('abc', [], 0x80))->encode());
checkThrows('task without options -> ProtocolException', ProtocolException::class, fn () => (new Worker($relay))->waitPayload());
[$relay] = memRelay((new Frame('abc', [4], 0x80))->encode());
checkThrows('options[0] > payload length -> ProtocolException', ProtocolException::class, fn () => (new Worker($relay))->waitPayload());
[$relay] = memRelay($bad);
checkThrows('relay verifies CRC of received frames', ProtocolException::class, fn () => (new Worker($relay))->waitPayload());

// short reads: 1..3 bytes per fread
stream_wrapper_register('shortread', ShortReadStream::class);
$big = str_repeat('0123456789abcdef', 4096);
ShortReadStream::$data = $vPidReq . (new Frame('CTX' . $big, [3], 0x80))->encode() . $vStopCmd;
$sin = fopen('shortread://x', 'rb');
stream_set_read_buffer($sin, 0);
$sout = fopen('php://memory', 'w+b');
$w = new Worker(Relay::fromStreams($sin, $sout));
$p = $w->waitPayload();
check('short reads: 64 KiB task reassembled', $p !== null && $p->context === 'CTX' && $p->body === $big);
check('short reads: PID answered, then stop', written($sout) === $expectReply && $w->waitPayload() === null);

// big frames (> 64 KiB: Relay::readBig) over a real pipe, which returns them in pieces: split
// into context and body byte-exact, the stream's buffering back on for the frames after it
$bigBody = '';
for ($i = 0; strlen($bigBody) < 3 << 20; $i++) {
    $bigBody .= md5((string) $i, true);
}
$bigBody .= 'end';
$bigCtx = str_repeat('c', 300);
$bigFile = tempnam(sys_get_temp_dir(), 'flbig');
file_put_contents($bigFile, $vPidReq . (new Frame($bigCtx . $bigBody, [300], 0x80))->encode()
    . $task . (new Frame('X' . $bigBody, [7, 1], 0x80))->encode() . $vStopCmd);
foreach (['pipe' => ['pipe', 'w'], 'socket' => ['socket']] as $kind => $spec) {
    $proc = proc_open(['cat', $bigFile], [1 => $spec], $pipes);
    $pout = fopen('php://memory', 'w+b');
    $w = new Worker(Relay::fromStreams($pipes[1], $pout, $kind === 'pipe'));
    $p = $w->waitPayload();
    check("big task over a $kind: context and body byte-exact", $p !== null && $p->context === $bigCtx && $p->body === $bigBody);
    $p = $w->waitPayload();
    check("big task over a $kind: the next small task intact", $p !== null && $p->context === 'ctx' && $p->body === 'body');
    $f = $w->relay()->waitFrame();
    check("big frame with two options over a $kind: whole payload", $f->options === [7, 1] && $f->payload === 'X' . $bigBody);
    check("big frames over a $kind: then stop, PID answered", $w->waitPayload() === null && written($pout) === $expectReply);
    fclose($pipes[1]);
    proc_close($proc);
}
unlink($bigFile);
[$relay] = memRelay((new Frame($bigBody, [strlen($bigBody) + 1], 0x80))->encode());
checkThrows('big task: options[0] > payload length -> ProtocolException', ProtocolException::class, fn () => (new Worker($relay))->waitPayload());
[$relay] = memRelay(substr((new Frame($bigCtx . $bigBody, [300], 0x80))->encode(), 0, 2 << 20));
checkThrows('big task: EOF mid-body -> RelayException', RelayException::class, fn () => (new Worker($relay))->waitPayload());

// ---------------------------------------------------------------- §6.3 proto request

$vCtx = hx('
0000  0a 09 31 32 37 2e 30 2e 30 2e 31 12 08 48 54 54  |..127.0.0.1..HTT|
0010  50 2f 31 2e 31 1a 03 47 45 54 22 1c 68 74 74 70  |P/1.1..GET".http|
0020  3a 2f 2f 6c 6f 63 61 6c 68 6f 73 74 3a 38 30 38  |://localhost:808|
0030  30 2f 68 69 3f 61 3d 31 2a 0f 0a 06 41 63 63 65  |0/hi?a=1*...Acce|
0040  70 74 12 05 0a 03 2a 2f 2a 3a 03 61 3d 31        |pt....*/*:.a=1|');
checkEq('§6.3 context is 78 bytes', 78, strlen($vCtx));
$r = Proto::decodeRequest($vCtx);
checkEq('§6.3 remote_addr', '127.0.0.1', $r['remoteAddr']);
checkEq('§6.3 protocol', 'HTTP/1.1', $r['protocol']);
checkEq('§6.3 method', 'GET', $r['method']);
checkEq('§6.3 uri', 'http://localhost:8080/hi?a=1', $r['uri']);
checkEq('§6.3 header map', ['Accept' => ['*/*']], $r['headers']);
checkEq('§6.3 raw_query', 'a=1', $r['rawQuery']);
check('§6.3 defaults (cookies, parsed, uploads, attributes)', $r['cookies'] === [] && $r['parsed'] === false && $r['uploads'] === '' && $r['attributes'] === []);
checkBytes('§6.3 encodeRequest reproduces the context', $vCtx, Proto::encodeRequest($r));

$vTaskHead = hx('14 80 4e 00 00 00 b2 7e a8 e3 00 00 4e 00 00 00');
$vTask = $vTaskHead . $vCtx;
checkBytes('§6.3 complete task frame', $vTask, (new Frame($vCtx, [78], Frame::CODEC_PROTO))->encode());

[$relay, , $out] = memRelay($vPidReq . $vTask . $vStopCmd);
$http = new HttpWorker(new Worker($relay));
$req = $http->waitRequest();
check('§6.3 HttpWorker: proto detected', $http->codec() === HttpWorker::CODEC_PROTO && $http->codecName() === 'proto');
check('§6.3 HttpWorker: request fields', $req !== null && $req->method === 'GET' && $req->uri === 'http://localhost:8080/hi?a=1'
    && $req->remoteAddr === '127.0.0.1' && $req->protocol === 'HTTP/1.1' && $req->headers === ['Accept' => ['*/*']]
    && $req->query === ['a' => '1'] && $req->body === '' && $req->parsed === false && $req->parsedBody === null
    && $req->path() === '/hi' && $req->header('accept') === '*/*');

// ---------------------------------------------------------------- §6.6 response

$vResp = hx('
0000  14 80 26 00 00 00 5e a1 3a 1d 00 00 21 00 00 00  |..&...^.:...!...|
0010  08 c8 01 12 1c 0a 0c 43 6f 6e 74 65 6e 74 2d 54  |.......Content-T|
0020  79 70 65 12 0c 0a 0a 74 65 78 74 2f 70 6c 61 69  |ype....text/plai|
0030  6e 68 65 6c 6c 6f                                |nhello|');
checkBytes('§6.6 Proto::encodeResponse', substr($vResp, 16, 33), Proto::encodeResponse(200, ['Content-Type' => ['text/plain']]));
[$relay, , $out] = memRelay();
$http = new HttpWorker(new Worker($relay));
$http->respond(200, 'hello', ['Content-Type' => 'text/plain']);
checkBytes('§6.6 HttpWorker::respond frame (scalar header normalised)', $vResp, written($out));
$d = Proto::decodeResponse(substr($vResp, 16, 33));
check('§6.6 decodeResponse', $d === ['status' => 200, 'headers' => ['Content-Type' => ['text/plain']]]);

// ---------------------------------------------------------------- §6.7 103

$v103 = hx('
0000  14 80 23 00 00 00 6c 51 e4 2a 01 00 23 00 00 00  |..#...lQ.*..#...|
0010  08 67 12 1f 0a 04 4c 69 6e 6b 12 17 0a 15 3c 2f  |.g....Link....</|
0020  61 2e 63 73 73 3e 3b 20 72 65 6c 3d 70 72 65 6c  |a.css>; rel=prel|
0030  6f 61 64                                         |oad|');
[$relay, , $out] = memRelay();
$http = new HttpWorker(new Worker($relay));
$http->respond(103, '', ['Link' => ['</a.css>; rel=preload']], false);
checkBytes('§6.7 103 Early Hints frame', $v103, written($out));
checkThrows('1xx with a body is refused', \InvalidArgumentException::class, fn () => $http->respond(103, 'x'));

// ---------------------------------------------------------------- protobuf robustness

$attrEntry = Proto::lenField(1, 'ipAddress') . Proto::lenField(2, Proto::lenField(1, '10.0.0.1') . Proto::lenField(1, 'x'));
$ctx2 = Proto::lenField(99, 'unknown')                       // unknown LEN
    . Proto::tag(11, 0) . Proto::varint(300)                 // unknown varint
    . Proto::tag(12, 1) . str_repeat("\xff", 8)              // unknown fixed64
    . Proto::tag(13, 5) . "\x01\x02\x03\x04"                 // unknown fixed32
    . Proto::tag(14, 3) . Proto::tag(1, 0) . "\x05" . Proto::tag(14, 4) // unknown group
    . Proto::lenField(10, $attrEntry)
    . Proto::tag(8, 0) . Proto::varint(1)
    . Proto::lenField(9, '{"f":{"name":"a.png","mime":"image/png","size":3,"error":0,"tmpName":"/tmp/u1"}}')
    . Proto::lenField(7, 'x=1&y[]=2&y[]=3')
    . Proto::lenField(6, Proto::lenField(1, 'sid') . Proto::lenField(2, Proto::lenField(1, 'a b')))
    // map entry with the value before the key and an unknown field inside
    . Proto::lenField(5, Proto::lenField(2, Proto::lenField(1, 'v1') . Proto::lenField(1, 'v2')) . Proto::lenField(1, 'X-Multi') . Proto::lenField(3, 'junk'))
    . Proto::lenField(3, 'POST')
    . Proto::lenField(1, '::1');
$r2 = Proto::decodeRequest($ctx2);
check('proto: unknown fields skipped, reverse order accepted', $r2['method'] === 'POST' && $r2['remoteAddr'] === '::1' && $r2['parsed'] === true);
checkEq('proto: map entry value-before-key, multi values', ['X-Multi' => ['v1', 'v2']], $r2['headers']);
checkEq('proto: attributes', ['ipAddress' => ['10.0.0.1', 'x']], $r2['attributes']);
checkThrows('proto: truncated field rejected', ProtocolException::class, fn () => Proto::decodeRequest(substr($vCtx, 0, 20)));
checkThrows('proto: wire type 7 rejected', ProtocolException::class, fn () => Proto::decodeRequest("\x0f"));
checkEq('proto: varint 2^63-1', PHP_INT_MAX, (function (): int { $s = Proto::varint(PHP_INT_MAX); $p = 0; return Proto::readVarint($s, $p, strlen($s)); })());
checkEq('proto: negative varint is 10 bytes', 10, strlen(Proto::varint(-1)));

[$relay] = memRelay((new Frame($ctx2 . '{"a":{"b":"c"}}', [strlen($ctx2)], 0x80))->encode());
$http = new HttpWorker(new Worker($relay));
$req = $http->waitRequest();
check('proto request: cookies, query, parsed body, uploads, attributes', $req !== null
    && $req->cookies === ['sid' => 'a b'] && $req->query === ['x' => '1', 'y' => ['2', '3']]
    && $req->parsedBody === ['a' => ['b' => 'c']] && $req->uploads['f']['tmpName'] === '/tmp/u1'
    && $req->attributes === ['ipAddress' => '10.0.0.1']);

// ---------------------------------------------------------------- JSON codec

$jsonCtx = '{"remoteAddr":"127.0.0.1","protocol":"HTTP/1.1","method":"GET","uri":"http://localhost:8080/hi?a=1","headers":{"Accept":["*/*"]},"cookies":{"c":"v"},"rawQuery":"a=1","parsed":false,"uploads":null,"attributes":{}}';
[$relay, , $out] = memRelay((new Frame($jsonCtx, [strlen($jsonCtx)], Frame::CODEC_JSON))->encode() . $vTask);
$http = new HttpWorker(new Worker($relay));
$req = $http->waitRequest();
check('JSON context detected', $http->codec() === HttpWorker::CODEC_JSON && $http->codecName() === 'json');
check('JSON request fields', $req !== null && $req->uri === 'http://localhost:8080/hi?a=1' && $req->headers === ['Accept' => ['*/*']]
    && $req->cookies === ['c' => 'v'] && $req->query === ['a' => '1'] && $req->uploads === []);
$http->respond(201, 'made', ['X-A' => ['1', 2], 'X-B' => 'b/c']);
$f = Frame::decode(written($out));
$pl = Worker::payloadOf($f);
check('JSON response: flags 0x08, context, body', $f->flags === 0x08 && $f->stream === 0
    && $pl->context === '{"status":201,"headers":{"X-A":["1","2"],"X-B":["b\/c"]}}' && $pl->body === 'made', $pl->context);
ftruncate($out, 0);
rewind($out);
$http->respond(200, '');
checkEq('JSON response with no headers sends {}', '{"status":200,"headers":{}}', Worker::payloadOf(Frame::decode(written($out)))->context);
checkThrows('codec is fixed for the process lifetime (proto ctx in JSON mode)', ProtocolException::class, fn () => $http->waitRequest());

[$relay] = memRelay((new Frame('', [0], 0x80))->encode());
checkEq('empty context and body -> waitRequest() null', null, (new HttpWorker(new Worker($relay)))->waitRequest());

// ---------------------------------------------------------------- streaming

[$relay, , $out] = memRelay();
$http = new HttpWorker(new Worker($relay));
$done = $http->respondStream(200, (function () { for ($i = 1; $i <= 7; $i++) { yield "chunk $i\n"; } })(), ['Content-Type' => 'text/plain']);
$bytes = written($out);
$frames = [];
while ($bytes !== '') {
    $frames[] = Frame::decode($bytes, true, $used);
    $bytes = substr($bytes, $used);
}
$streamBits = array_map(fn (Frame $f) => $f->stream, $frames);
checkEq('stream: 7 chunk frames + final', 8, count($frames));
checkEq('stream: STREAM bits, PING on frame 6, final without STREAM', [1, 1, 1, 1, 1, 5, 1, 0], $streamBits);
check('stream: bodies and repeated status/headers', $done
    && Worker::payloadOf($frames[2])->body === "chunk 3\n" && Worker::payloadOf($frames[7])->body === ''
    && Proto::decodeResponse(Worker::payloadOf($frames[7])->context)['status'] === 200
    && Proto::decodeResponse(Worker::payloadOf($frames[4])->context)['headers'] === ['Content-Type' => ['text/plain']]);

// STOP from the server mid-stream (socket pair: selectable)
[$a, $b] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
$http = new HttpWorker(new Worker(Relay::fromStreams($a, $a)));
$gen = (function () use ($b, $vPong, $vStreamStop) {
    yield "one\n";
    fwrite($b, $vPong); // a PONG is consumed silently
    yield "two\n";
    fwrite($b, $vStreamStop);
    yield "three\n";
    yield "four\n";
})();
$done = $http->respondStream(200, $gen);
stream_set_blocking($b, false);
$bytes = (string) stream_get_contents($b);
$frames = [];
while ($bytes !== '') {
    $frames[] = Frame::decode($bytes, true, $used);
    $bytes = substr($bytes, $used);
}
check('stream STOP: respondStream() returns false', $done === false);
checkEq('stream STOP: two chunks then a final frame', [1, 1, 0], array_map(fn (Frame $f) => $f->stream, $frames));
check('stream STOP: final frame has empty body', isset($frames[2]) && Worker::payloadOf($frames[2])->body === '');

// ---------------------------------------------------------------- fast paths (issue 9)

// Request::fromProto(): maps decoded on first read, fields identical to the eager decode
$bctx = Proto::encodeRequest([
    'remoteAddr' => '10.1.2.3', 'protocol' => 'HTTP/2.0', 'method' => 'POST', 'uri' => 'http://h/p/q?x=1&y[]=2',
    'headers' => ['Accept' => ['*/*'], 'X-Multi' => ['a', 'b'], '123' => ['numeric name']],
    'cookies' => ['sid' => ['a b'], 'two' => ['1', '2']], 'rawQuery' => 'x=1&y[]=2', 'parsed' => true,
    'uploads' => '{"f":{"name":"a.png","tmpName":"/tmp/u1"}}', 'attributes' => ['ipAddress' => ['10.0.0.9', 'x']],
]);
$lazy = Request::fromProto($bctx, '{"k":[1,2]}');
$eager = Request::fromContext(Proto::decodeRequest($bctx), '{"k":[1,2]}', true);
$fields = ['remoteAddr', 'protocol', 'method', 'uri', 'headers', 'cookies', 'rawQuery', 'query', 'body', 'parsed', 'parsedBody', 'uploads', 'attributes'];
$same = true;
foreach ($fields as $name) {
    $same = $same && $lazy->$name === $eager->$name;
}
check('lazy request: every field equals the eager decode', $same);
$expected = new Request('10.1.2.3', 'HTTP/2.0', 'POST', 'http://h/p/q?x=1&y[]=2',
    ['Accept' => ['*/*'], 'X-Multi' => ['a', 'b'], '123' => ['numeric name']], ['sid' => 'a b', 'two' => '1,2'],
    'x=1&y[]=2', ['x' => '1', 'y' => ['2']], '{"k":[1,2]}', true, ['k' => [1, 2]],
    ['f' => ['name' => 'a.png', 'tmpName' => '/tmp/u1']], ['ipAddress' => '10.0.0.9']);
$same = true;
foreach ($fields as $name) {
    $same = $same && $eager->$name === $expected->$name;
}
check('lazy request: equals a constructed Request', $same);
$lazy = Request::fromProto($bctx, '');
check('lazy request: isset/empty before the first read', isset($lazy->headers, $lazy->cookies['sid'], $lazy->query['x'])
    && !isset($lazy->cookies['nope']) && !empty($lazy->attributes) && !empty($lazy->uploads)
    && isset($lazy->parsedBody) && $lazy->parsedBody === [] && $lazy->header('x-multi') === 'a');
$noBody = Request::fromProto(Proto::encodeRequest(['method' => 'GET']), '');
check('lazy request: parsedBody null and not set when not parsed', !isset($noBody->parsedBody) && $noBody->parsedBody === null
    && $noBody->query === [] && $noBody->headers === [] && $noBody->uploads === []);
checkThrows('lazy request: fields stay readonly before the first read', \Error::class, function () use ($noBody): void {
    $noBody->query = ['x' => 1];
});
checkThrows('lazy request: fields stay readonly after the first read', \Error::class, function () use ($lazy): void {
    $lazy->headers = [];
});
ob_start();
var_dump(Request::fromProto($bctx, ''));
$dump = (string) ob_get_clean();
check('lazy request: var_dump shows the lazy fields', str_contains($dump, '["cookies"]') && str_contains($dump, 'numeric name'));
$warned = '';
set_error_handler(static function (int $no, string $msg) use (&$warned): bool { $warned = $msg; return true; });
$undef = $lazy->nope;
restore_error_handler();
check('lazy request: an undefined property warns and reads null', $undef === null && str_contains($warned, 'Undefined property'));
checkThrows('lazy request: broken maps are still rejected on first read', ProtocolException::class,
    fn () => Request::fromProto("\x2a\x05\x0a\x09ab", '')->headers);
checkThrows('decodeRequest without maps still checks map lengths', ProtocolException::class,
    fn () => Proto::decodeRequest("\x2a\x09\x0a", false));
checkEq('decodeRequest without maps: scalars only', ['GET', []], (function () use ($bctx): array {
    $r = Proto::decodeRequest(Proto::encodeRequest(['method' => 'GET', 'headers' => ['A' => ['b']]]), false);
    return [$r['method'], $r['headers']];
})());
// JSON codec requests are lazy too
$j = Request::fromContext(['uri' => '/x', 'headers' => ['A' => 'b', 'N' => [1, true]], 'cookies' => ['c' => 'v'],
    'attributes' => ['k' => ['x']], 'uploads' => null, 'rawQuery' => 'a=1'], '', false);
check('JSON request fields (scalars wrapped, attributes kept as given)', $j->headers === ['A' => ['b'], 'N' => ['1', '1']]
    && $j->cookies === ['c' => 'v'] && $j->attributes === ['k' => ['x']] && $j->uploads === [] && $j->query === ['a' => '1']);

// lenField: the one-byte fast path writes what the generic varint path writes
$ok = true;
foreach ([[1, ''], [2, str_repeat('x', 127)], [15, 'v'], [16, 'v'], [2, str_repeat('y', 128)], [0, 'z']] as [$no, $v]) {
    $ok = $ok && Proto::lenField($no, $v) === Proto::varint(($no << 3) | 2) . Proto::varint(strlen($v)) . $v;
}
check('lenField fast path = tag . varint(len) . bytes', $ok);

// long strings and non-canonical (multi-byte) tags still decode
$longUa = str_repeat('u', 300);
$nc = "\x9a\x00" . Proto::varint(3) . 'GET'   // field 3 with a two-byte tag
    . Proto::lenField(5, "\x8a\x00" . Proto::varint(2) . 'Ua' . Proto::lenField(2, Proto::lenField(1, $longUa)));
$d = Proto::decodeRequest($nc);
check('proto: multi-byte tags and 2-byte lengths', $d['method'] === 'GET' && $d['headers'] === ['Ua' => [$longUa]]);

// response context cache: same status+headers reuse the bytes; a Stringable is never cached
final class Counter implements \Stringable
{
    private int $n = 0;

    public function __toString(): string
    {
        return (string) ++$this->n;
    }
}
[$relay, , $out] = memRelay();
$http = new HttpWorker(new Worker($relay));
$http->respond(200, 'hello', ['Content-Type' => 'text/plain']);
$http->respond(200, 'hello', ['Content-Type' => 'text/plain']);
checkBytes('cached response context: identical frames', $vResp . $vResp, written($out));
ftruncate($out, 0);
rewind($out);
$c = new Counter();
$http->respond(200, '', ['X-N' => $c]);
$http->respond(200, '', ['X-N' => $c]);
$http->respond(201, '', ['X-N' => 'a']);
$http->respond(201, '', ['X-N' => ['a']]);
$bytes = written($out);
$ctxs = [];
while ($bytes !== '') {
    $ctxs[] = Proto::decodeResponse(Worker::payloadOf(Frame::decode($bytes, true, $used))->context);
    $bytes = substr($bytes, $used);
}
checkEq('response cache: Stringable re-rendered, status/header changes seen', [
    ['status' => 200, 'headers' => ['X-N' => ['1']]], ['status' => 200, 'headers' => ['X-N' => ['2']]],
    ['status' => 201, 'headers' => ['X-N' => ['a']]], ['status' => 201, 'headers' => ['X-N' => ['a']]],
], $ctxs);

// sendData: header cache keyed on sizes, flags and stream byte
[$relay, , $out] = memRelay();
$w = new Worker($relay);
$w->sendData('ab', 'cd', 0x80, 0);
$w->sendData('ab', 'cd', 0x80, Frame::STREAM);
$w->sendData('abc', 'd', 0x80, Frame::STREAM);
$w->sendData('abc', 'd', 0x81, Frame::STREAM);
checkBytes('sendData = Frame::encode for each change', (new Frame('abcd', [2], 0x80))->encode()
    . (new Frame('abcd', [2], 0x80, Frame::STREAM))->encode() . (new Frame('abcd', [3], 0x80, Frame::STREAM))->encode()
    . (new Frame('abcd', [3], 0x80, Frame::STREAM))->encode(), written($out));

// relay: frames with 0 and 2 options, empty payloads, back to back
[$relay] = memRelay((new Frame('', [], 0, Frame::PONG))->encode() . (new Frame('xy', [7, 8], 0x10))->encode()
    . (new Frame('', [0]))->encode());
$f1 = $relay->waitFrame();
$f2 = $relay->waitFrame();
$f3 = $relay->waitFrame();
check('relay: 0/2/1-option frames', $f1->stream === Frame::PONG && $f1->payload === '' && $f1->options === []
    && $f2->options === [7, 8] && $f2->payload === 'xy' && $f2->flags === 0x10 && $f3->options === [0] && $f3->payload === '');
$badHl = (new Frame('x', [1]))->encode();
$badHl[0] = "\x12";
[$relay] = memRelay($badHl);
checkThrows('relay rejects HL < 3', ProtocolException::class, fn () => $relay->waitFrame());

// ---------------------------------------------------------------- relay DSN

checkThrows('RR_RELAY tcp://:7000 rejected', RelayException::class, fn () => Relay::create('tcp://:7000'));
checkThrows('RR_RELAY tcp without port rejected', RelayException::class, fn () => Relay::create('tcp://127.0.0.1'));
checkThrows('RR_RELAY bogus rejected', RelayException::class, fn () => Relay::create('foo://x'));
checkEq('RR_RELAY unix:///tmp/rr.sock parsed', 'unix:///tmp/rr.sock', Relay::create('unix:///tmp/rr.sock')->address());
checkEq('RR_RELAY tcp://127.0.0.1:7000 parsed', 'tcp://127.0.0.1:7000', Relay::create('tcp://127.0.0.1:7000')->address());
check('RR_RELAY pipes', Relay::create('pipes')->isPipes());

// socket relay end-to-end: the test plays the server
$sockPath = sys_get_temp_dir() . '/forkline-selftest-' . getmypid() . '.sock';
@unlink($sockPath);
$server = stream_socket_server('unix://' . $sockPath, $errno, $errstr);
if ($server === false) {
    check('unix socket relay', false, "listen failed: $errstr");
} else {
    $relay = Relay::create('unix://' . $sockPath);
    $w = new Worker($relay);
    // the worker connects lazily on first I/O: trigger it with a respond, then accept
    $w->error('hello-over-socket');
    $conn = stream_socket_accept($server, 2.0);
    $got = fread($conn, 100);
    fwrite($conn, $vPidReq . $task . $vStopCmd);
    $p = $w->waitPayload();
    $reply = fread($conn, 100);
    check('unix socket relay: frames both ways', $got === (new Frame('hello-over-socket', [], Frame::ERROR))->encode()
        && $p !== null && $p->body === 'body' && $reply === $expectReply && $w->waitPayload() === null);
    $relay->close();
    fclose($conn);
    fclose($server);
    @unlink($sockPath);
}

// TCP relay: same dance on an ephemeral port
$server = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
if ($server === false) {
    check('tcp socket relay', false, "listen failed: $errstr");
} else {
    $addr = (string) stream_socket_get_name($server, false);
    $relay = Relay::create('tcp://' . $addr);
    $w = new Worker($relay);
    $w->respond(new Payload('pong-body', 'c'));
    $conn = stream_socket_accept($server, 2.0);
    $got = fread($conn, 100);
    fwrite($conn, $vPidReq . $vStopCmd);
    $stopped = $w->waitPayload() === null;
    $reply = fread($conn, 100);
    check('tcp socket relay (' . $addr . '): frames both ways', $got === (new Frame('cpong-body', [1]))->encode()
        && $stopped && $reply === $expectReply);
    $relay->close();
    fclose($conn);
    fclose($server);
}
checkThrows('socket relay: connection refused -> RelayException', RelayException::class,
    fn () => (new Worker(Relay::create('unix:///nonexistent/forkline.sock')))->error('x'));

// ---------------------------------------------------------------- summary

echo "php selftest: $passed passed, $failed failed\n";
exit($failed > 0 ? 1 : 0);
