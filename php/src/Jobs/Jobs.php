<?php

declare(strict_types=1);

namespace Forkline\Jobs;

use Forkline\Frame;
use Forkline\RPC;

/**
 * Push client for the jobs.* RPC methods (protobuf jobs.v1, spec §9.3), over Forkline\RPC:
 *
 *     $jobs = new Jobs(RPC::create('tcp://127.0.0.1:6001'));
 *     $jobs->push('default', 'App\\Mail', '{"to":"a@b"}', delay: 5);
 */
final class Jobs
{
    private RPC $rpc;

    public function __construct(RPC $rpc)
    {
        $this->rpc = $rpc->withCodec(Frame::CODEC_PROTO);
    }

    /** @param array<string, list<string>> $headers */
    public function push(string $pipeline, string $name, string $payload, int $delay = 0, int $priority = 0,
                         array $headers = [], ?string $id = null): string
    {
        $id ??= self::uuid();
        $this->rpc->call('jobs.Push', self::bytes(1, self::job($pipeline, $name, $payload, $delay, $priority, $headers, $id)));

        return $id;
    }

    /** @param list<array{pipeline:string,name:string,payload:string,delay?:int,priority?:int,id?:string}> $jobs */
    public function pushBatch(array $jobs): void
    {
        $out = '';
        foreach ($jobs as $j) {
            $out .= self::bytes(1, self::job($j['pipeline'], $j['name'], $j['payload'], $j['delay'] ?? 0,
                $j['priority'] ?? 0, [], $j['id'] ?? self::uuid()));
        }
        $this->rpc->call('jobs.PushBatch', $out);
    }

    public function pause(string ...$pipelines): void
    {
        $this->rpc->call('jobs.Pause', self::names($pipelines));
    }

    public function resume(string ...$pipelines): void
    {
        $this->rpc->call('jobs.Resume', self::names($pipelines));
    }

    /** @return list<string> */
    public function list(): array
    {
        $out = [];
        foreach (self::fields((string) $this->rpc->call('jobs.List', '')) as [$f, $v]) {
            if ($f === 1) {
                $out[] = $v;
            }
        }

        return $out;
    }

    /** @param array<string, list<string>> $headers */
    private static function job(string $pipeline, string $name, string $payload, int $delay, int $priority,
                                array $headers, string $id): string
    {
        $h = '';
        foreach ($headers as $k => $values) {
            $vals = '';
            foreach ((array) $values as $v) {
                $vals .= self::bytes(1, (string) $v);
            }
            $h .= self::bytes(4, self::bytes(1, (string) $k) . self::bytes(2, $vals));
        }
        $opts = self::varint(1, $priority) . self::bytes(2, $pipeline) . self::varint(3, $delay);

        return self::bytes(1, $name) . self::bytes(2, $id) . self::bytes(3, $payload) . $h . self::bytes(5, $opts);
    }

    /** @param list<string> $names */
    private static function names(array $names): string
    {
        return implode('', array_map(static fn (string $n) => self::bytes(1, $n), $names));
    }

    private static function raw(int $v): string
    {
        $out = '';
        while ($v >= 0x80 || $v < 0) {
            $out .= chr(($v & 0x7F) | 0x80);
            $v = ($v >> 7) & (PHP_INT_MAX >> 6);
        }

        return $out . chr($v);
    }

    private static function varint(int $field, int $v): string
    {
        return $v === 0 ? '' : self::raw($field << 3) . self::raw($v);
    }

    private static function bytes(int $field, string $s): string
    {
        return self::raw(($field << 3) | 2) . self::raw(strlen($s)) . $s;
    }

    /** @return list<array{int, string|int}> */
    private static function fields(string $d): array
    {
        $out = [];
        $i = 0;
        $n = strlen($d);
        $read = static function () use ($d, &$i): int {
            $v = 0;
            $shift = 0;
            do {
                $b = ord($d[$i++]);
                $v |= ($b & 0x7F) << $shift;
                $shift += 7;
            } while ($b & 0x80);

            return $v;
        };
        while ($i < $n) {
            $tag = $read();
            if (($tag & 7) === 2) {
                $len = $read();
                $out[] = [$tag >> 3, substr($d, $i, $len)];
                $i += $len;
            } else {
                $out[] = [$tag >> 3, $read()];
            }
        }

        return $out;
    }

    private static function uuid(): string
    {
        $b = random_bytes(16);
        $b[6] = chr((ord($b[6]) & 0x0f) | 0x40);
        $b[8] = chr((ord($b[8]) & 0x3f) | 0x80);

        return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($b), 4));
    }
}
