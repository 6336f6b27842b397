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

    /**
     * One call for many jobs; for a redis pipeline they are stored all or none.
     *
     * @param list<array{pipeline:string,name:string,payload:string,delay?:int,priority?:int,id?:string,headers?:array<string, list<string>>}> $jobs
     * @return list<string> the ids
     */
    public function pushBatch(array $jobs): array
    {
        $out = '';
        $ids = [];
        foreach ($jobs as $j) {
            $ids[] = $id = $j['id'] ?? self::uuid();
            $out .= self::bytes(1, self::job($j['pipeline'], $j['name'], $j['payload'], $j['delay'] ?? 0,
                $j['priority'] ?? 0, $j['headers'] ?? [], $id));
        }
        $this->rpc->call('jobs.PushBatch', $out);

        return $ids;
    }

    /**
     * A pipeline at run time: 'driver' and 'name', plus its options as in the config
     * (docs/jobs-redis.md), e.g. ['driver' => 'redis', 'name' => 'mail', 'addrs' => '127.0.0.1:6379'].
     *
     * @param array<string, string|int|bool> $options
     */
    public function declare(array $options): void
    {
        $out = '';
        foreach ($options as $k => $v) {
            $v = is_bool($v) ? ($v ? 'true' : 'false') : (string) $v;
            $out .= self::bytes(1, self::bytes(1, (string) $k) . self::bytes(2, $v));
        }
        $this->rpc->call('jobs.Declare', $out);
    }

    /** @return list<string> the pipelines destroyed */
    public function destroy(string ...$pipelines): array
    {
        $out = [];
        foreach (self::fields((string) $this->rpc->call('jobs.Destroy', self::names($pipelines))) as [$f, $v]) {
            if ($f === 1) {
                $out[] = $v;
            }
        }

        return $out;
    }

    /**
     * jobs.Stat: one entry per pipeline.
     *
     * @return list<array{pipeline:string,driver:string,queue:string,active:int,delayed:int,reserved:int,ready:bool,priority:int}>
     */
    public function stat(): array
    {
        $out = [];
        foreach (self::fields((string) $this->rpc->call('jobs.Stat', '')) as [$f, $v]) {
            if ($f !== 1) {
                continue;
            }
            $s = ['pipeline' => '', 'driver' => '', 'queue' => '', 'active' => 0, 'delayed' => 0,
                  'reserved' => 0, 'ready' => false, 'priority' => 0];
            $names = [1 => 'pipeline', 2 => 'driver', 3 => 'queue', 4 => 'active', 5 => 'delayed',
                      6 => 'reserved', 7 => 'ready', 8 => 'priority'];
            foreach (self::fields((string) $v) as [$sf, $sv]) {
                if (isset($names[$sf])) {
                    $s[$names[$sf]] = $sf === 7 ? (bool) $sv : $sv;
                }
            }
            $out[] = $s;
        }

        return $out;
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
