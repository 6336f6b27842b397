<?php

/**
 * RPC calls as some spiral/goridge versions make them (spec §9.1, §14 item 8): the sequence
 * number lives in each RPC object, so a cloned object repeats it and one connection carries
 * 1, 2, 3, 3, 3, ... The client checks, as goridge does, that every reply has two options and
 * echoes the number it sent. For tests/integration/test_official_compat.py.
 *
 *   php official_rpc.php tcp://127.0.0.1:PORT
 * prints one JSON line: [[seq, method, reply or "ERROR: text"], ...]
 */

declare(strict_types=1);

function pack_frame(int $flags, string $payload, array $options): string
{
    $h = chr(0x10 | (3 + count($options))) . chr($flags) . pack('V', strlen($payload));
    $h .= pack('V', crc32($h)) . "\0\0";
    foreach ($options as $o) {
        $h .= pack('V', $o);
    }

    return $h . $payload;
}

function read_exact($s, int $n): string
{
    $out = '';
    while (strlen($out) < $n) {
        $b = fread($s, $n - strlen($out));
        if ($b === false || $b === '') {
            throw new RuntimeException('connection closed');
        }
        $out .= $b;
    }

    return $out;
}

/** One goridge RPC call with the JSON codec and the given sequence number. */
function call($s, int $seq, string $method, mixed $arg): mixed
{
    fwrite($s, pack_frame(0x08, $method . json_encode($arg), [$seq, strlen($method)]));
    $h = read_exact($s, 12);
    $hl = ord($h[0]) & 0x0f;
    $rest = read_exact($s, ($hl - 3) * 4 + unpack('V', substr($h, 2, 4))[1]);
    if ($hl - 3 !== 2) {
        throw new RuntimeException('Invalid RPC frame, options missing');
    }
    $o = unpack('Vseq/Vmlen', substr($rest, 0, 8));
    if ($o['seq'] !== $seq) {
        throw new RuntimeException("Invalid RPC frame, sequence mismatch: sent $seq, got {$o['seq']}");
    }
    $body = substr($rest, 8 + $o['mlen']);
    if (ord($h[1]) & 0x40) {
        return 'ERROR: ' . $body;
    }

    return json_decode($body, true, 512, JSON_THROW_ON_ERROR);
}

$s = stream_socket_client($argv[1], $errno, $errstr, 5);
if ($s === false) {
    fwrite(STDERR, "connect: $errstr\n");
    exit(2);
}
$calls = [
    [1, 'informer.List', true],
    [2, 'resetter.List', true],
    [3, 'informer.Workers', 'http'],
    [3, 'informer.Workers', 'http'], // a cloned RPC object: the same number again
    [3, 'rpc.Version', true],
    [3, 'nope.Method', true],         // an error reply keeps the number too
    [3, 'informer.List', true],
    [4, 'informer.List', true],
];
$out = [];
foreach ($calls as [$seq, $method, $arg]) {
    $out[] = [$seq, $method, call($s, $seq, $method, $arg)];
}
echo json_encode($out), "\n";
