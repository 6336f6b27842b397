<?php

/**
 * A jobs consumer that answers exactly as the OFFICIAL spiral/roadrunner-jobs does (spec §7.2,
 * §14 item 7), over a goridge-4.2-style relay (one fread for a header, exactly one option per
 * task, see official_http.php), for tests/integration/test_official_compat.py.
 *
 * Before 4.5, complete() sends {"type":0,"data":[]} and fail($e, $requeue) type 1 with
 * {"message","requeue","delay_seconds","headers"}; later versions send 2 (ack), 3 (nack) and
 * 4 (requeue). Every answer is a data frame with flags 0x00, options [0], the JSON as body.
 *
 * Job payload (JSON): {"sink": FILE, "type": 0-4, "requeue": bool, "marks": DIR}
 *   every delivery appends "<id> <pid> <attempt> <type sent>" to FILE; with "marks" the first
 *   delivery answers "type", every later one complete() (type 0); without it always "type".
 * Violations of the official rules go to stderr as "OFFICIAL-VIOLATION ...".
 */

declare(strict_types=1);

function violation(string $what): void
{
    fwrite(STDERR, 'OFFICIAL-VIOLATION ' . getmypid() . ': ' . $what . "\n");
}

function pack_frame(int $flags, string $payload, array $options = []): string
{
    $h = chr(0x10 | (3 + count($options))) . chr($flags) . pack('V', strlen($payload));
    $h .= pack('V', crc32($h)) . "\0\0";
    foreach ($options as $o) {
        $h .= pack('V', $o);
    }

    return $h . $payload;
}

/** @return array{flags:int, options:list<int>, payload:string, byte10:int} */
function wait_frame(): array
{
    $header = fread(STDIN, 12);
    if ($header === '' && feof(STDIN)) {
        exit(0);
    }
    if ($header === false || strlen($header) !== 12) {
        violation('Unable to read frame header: Incorrect header size');
        exit(1);
    }
    $hl = ord($header[0]) & 0x0f;
    $length = ($hl - 3) * 4 + unpack('V', substr($header, 2, 4))[1];
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

function answer(int $type, array $data): void
{
    // roadrunner-jobs: $this->worker->respond(new Payload(json_encode(['type' => .., 'data' => ..])))
    $body = json_encode(['type' => $type, 'data' => $data]);
    fwrite(STDOUT, pack_frame(0, $body, [0]));
}

while (true) {
    $f = wait_frame();
    if ($f['flags'] & 0x01) {
        $cmd = json_decode($f['payload'], true);
        if (!is_array($cmd)) {
            violation('control frame is not a JSON object');
            exit(1);
        }
        if (!empty($cmd['stop'])) {
            exit(0);
        }
        if (!empty($cmd['pid'])) {
            fwrite(STDOUT, pack_frame(0x01, json_encode(['pid' => getmypid()])));
            continue;
        }
        violation('undefined control package');
        exit(1);
    }
    if ($f['byte10'] & 0x0a) {
        continue; // STOP / PONG outside a stream: skipped
    }
    if (count($f['options']) !== 1) {
        violation('task frame with ' . count($f['options']) . ' options');
        exit(1);
    }
    $ctx = json_decode(substr($f['payload'], 0, $f['options'][0]), true);
    $body = (string) substr($f['payload'], $f['options'][0]);
    if (!is_array($ctx) || !isset($ctx['id'], $ctx['job']) || !array_key_exists('headers', $ctx)) {
        violation('Task payload does not have a valid header');
        exit(1);
    }
    $headers = (array) $ctx['headers'];
    $p = json_decode($body, true);
    $id = (string) $ctx['id'];
    $type = (int) ($p['type'] ?? 0);
    $attempt = 1;
    if (isset($p['marks'])) {
        $mark = $p['marks'] . '/' . $id;
        $attempt = file_exists($mark) ? (int) file_get_contents($mark) + 1 : 1;
        file_put_contents($mark, (string) $attempt);
        if ($attempt > 1) {
            $type = 0;
        }
    }
    file_put_contents($p['sink'], "$id " . getmypid() . " $attempt $type\n", FILE_APPEND | LOCK_EX);
    $requeue = (bool) ($p['requeue'] ?? false);
    match ($type) {
        0 => answer(0, []),                                    // complete(), jobs < 4.5
        1 => answer(1, ['message' => "failed $id", 'requeue' => $requeue, 'delay_seconds' => 0,
            'headers' => $headers]),                           // fail(), jobs < 4.5
        2 => answer(2, []),                                    // ack()
        3 => answer(3, ['message' => "nacked $id", 'requeue' => $requeue, 'delay_seconds' => 0]),
        4 => answer(4, ['message' => "requeued $id", 'delay_seconds' => 0,
            'headers' => $headers + ['attempt' => [(string) $attempt]]]),
        default => answer($type, []),
    };
}
