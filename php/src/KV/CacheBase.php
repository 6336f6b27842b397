<?php

declare(strict_types=1);

namespace Forkline\KV;

use Forkline\Frame;
use Forkline\Http\Proto;
use Forkline\RPC;
use Forkline\ServiceException;

/**
 * A PSR-16 cache over the kv.* RPC methods (protobuf kv.v1, spec §9.3), the behaviour of
 * spiral/roadrunner-kv's Spiral\RoadRunner\KeyValue\Cache over Forkline\RPC:
 *
 *     $cache = new Cache(RPC::create('tcp://127.0.0.1:6001'), 'local');
 *     $cache->set('user:42', ['name' => 'Ann'], 60);        // ttl: seconds or a DateInterval
 *     $cache->get('user:42');                                 // ['name' => 'Ann']
 *     $cache->getMultiple(['a', 'b'], 'none');               // ['a' => ..., 'b' => 'none']
 *
 * Values travel as serialize() output (as upstream's DefaultSerializer), so they are shared with
 * the official client; pass other closures to store raw strings or use igbinary. A ttl becomes an
 * absolute RFC 3339 UTC deadline, "2026-08-22T10:00:00+00:00", computed here as upstream does.
 *
 * Differences from upstream, both from PSR-16: a ttl of 0 or less deletes the keys (upstream
 * stores them without a TTL), and int keys of setMultiple() (PHP turns "1" into 1) are accepted.
 *
 * Errors: StorageException for a storage the server does not have, KVException for any other
 * server error (e.g. "redis: not connected"), InvalidArgumentException for a bad key or ttl.
 */
abstract class CacheBase
{
    private RPC $rpc;
    private \Closure $serialize;
    private \Closure $unserialize;
    /** Request field 1 (storage name), the same on every call. */
    private string $head;

    /**
     * @param null|\Closure(mixed): string $serialize   default serialize()
     * @param null|\Closure(string): mixed $unserialize default unserialize()
     */
    public function __construct(RPC $rpc, private readonly string $name, ?\Closure $serialize = null,
                                ?\Closure $unserialize = null)
    {
        if ($name === '') {
            throw new InvalidArgumentException('the storage name must not be empty');
        }
        $this->rpc = $rpc->withCodec(Frame::CODEC_PROTO);
        $this->head = "\x0a" . self::len($name) . $name;
        $this->serialize = $serialize ?? static fn (mixed $v): string => serialize($v);
        $this->unserialize = $unserialize ?? static function (string $s): mixed {
            $v = @unserialize($s);
            if ($v === false && $s !== serialize(false)) {
                throw new KVException('cannot unserialize a cached value');
            }

            return $v;
        };
    }

    public function getName(): string
    {
        return $this->name;
    }

    public function get(mixed $key, mixed $default = null): mixed
    {
        return $this->getMultiple([$key], $default)[$key];
    }

    /** @return array<string, mixed> every key asked for, $default where it is missing */
    public function getMultiple(mixed $keys, mixed $default = null): iterable
    {
        $keys = $this->keys($keys);
        $found = $this->items('kv.MGet', $this->keysRequest($keys));
        $out = [];
        foreach ($keys as $k) {
            $out[$k] = isset($found[$k]) ? ($this->unserialize)($found[$k][0]) : $default;
        }

        return $out;
    }

    public function has(mixed $key): bool
    {
        $key = $this->keys([$key])[0];

        return isset($this->items('kv.Has', $this->keysRequest([$key]))[$key]);
    }

    public function set(mixed $key, mixed $value, mixed $ttl = null): bool
    {
        if ($ttl !== null) {
            return $this->setMultiple([$this->keys([$key])[0] => $value], $ttl);
        }
        // the common call, one key without a ttl: no intermediate arrays (it runs per request)
        $this->keys([$key]);
        $v = ($this->serialize)($value);
        $item = "\x0a" . self::len($key) . $key . ($v !== '' ? "\x12" . self::len($v) . $v : '');
        $this->call('kv.Set', $this->head . "\x12" . self::len($item) . $item);

        return true;
    }

    public function setMultiple(mixed $values, mixed $ttl = null): bool
    {
        if (!is_iterable($values)) {
            throw new InvalidArgumentException('values must be an iterable of key => value, got ' .
                get_debug_type($values));
        }
        $deadline = $this->deadline($ttl);
        $items = [];
        foreach ($values as $k => $v) {
            $items[] = [$this->keys([is_int($k) ? (string) $k : $k])[0], ($this->serialize)($v), $deadline];
        }
        if ($deadline === null) { // expired already (PSR-16): delete instead
            return $this->deleteMultiple(array_column($items, 0));
        }
        $this->call('kv.Set', $this->request($items));

        return true;
    }

    public function delete(mixed $key): bool
    {
        return $this->deleteMultiple([$key]);
    }

    public function deleteMultiple(mixed $keys): bool
    {
        $keys = $this->keys($keys);
        $this->call('kv.Delete', $this->keysRequest($keys));

        return true;
    }

    public function clear(): bool
    {
        try {
            $this->call('kv.Clear', $this->request([]));
        } catch (KVException $e) {
            if (str_contains($e->getMessage(), "can't find method kv.Clear")) {
                throw new KVException('the server does not support kv.Clear', 0, $e);
            }
            throw $e;
        }

        return true;
    }

    /** When the key expires; null when it has no TTL or does not exist. */
    public function getTtl(mixed $key): ?\DateTimeImmutable
    {
        return $this->getMultipleTtl([$key])[$key];
    }

    /** @return array<string, ?\DateTimeImmutable> */
    public function getMultipleTtl(mixed $keys): array
    {
        $keys = $this->keys($keys);
        try {
            $found = $this->items('kv.TTL', $this->keysRequest($keys));
        } catch (KVException $e) {
            if (str_contains($e->getMessage(), '_plugin_ttl')) {
                throw new KVException("storage {$this->name} does not support kv.TTL", 0, $e);
            }
            throw $e;
        }
        $utc = new \DateTimeZone('UTC');
        $out = [];
        foreach ($keys as $k) {
            $t = $found[$k][1] ?? '';
            $d = $t !== '' ? \DateTimeImmutable::createFromFormat(\DateTimeInterface::RFC3339, $t, $utc) : false;
            $out[$k] = $d === false ? null : $d;
        }

        return $out;
    }

    // ---------------------------------------------------------------- internals

    /** @return list<string> */
    private function keys(mixed $keys): array
    {
        if (!is_iterable($keys)) {
            throw new InvalidArgumentException('keys must be iterable, got ' . get_debug_type($keys));
        }
        $out = [];
        foreach ($keys as $k) {
            if (!is_string($k) || trim($k) === '') {
                throw new InvalidArgumentException(is_string($k)
                    ? 'cache key must not be empty'
                    : 'cache key must be a string, but ' . get_debug_type($k) . ' passed');
            }
            $out[] = $k;
        }

        return $out;
    }

    /** The RFC 3339 deadline for a ttl: '' for none, null when it is already over. */
    private function deadline(mixed $ttl): ?string
    {
        if ($ttl === null) {
            return '';
        }
        $now = new \DateTimeImmutable('now', new \DateTimeZone('UTC'));
        if ($ttl instanceof \DateInterval) {
            $at = $now->add($ttl);
        } elseif (is_int($ttl)) {
            $at = $now->setTimestamp($now->getTimestamp() + $ttl);
        } else {
            throw new InvalidArgumentException('ttl must be null, an int or a DateInterval, got ' .
                get_debug_type($ttl));
        }

        return $at->getTimestamp() <= $now->getTimestamp() ? null : $at->format(\DateTimeInterface::RFC3339);
    }

    /** kv.v1.Request{storage=1, items=2 [Item{key=1, value=2, timeout=3}]} */
    private function request(array $items): string
    {
        $req = $this->head;
        foreach ($items as [$key, $value, $timeout]) {
            $item = "\x0a" . self::len($key) . $key;
            if ($value !== '') {
                $item .= "\x12" . self::len($value) . $value;
            }
            if ($timeout !== '') {
                $item .= "\x1a" . self::len($timeout) . $timeout;
            }
            $req .= "\x12" . self::len($item) . $item;
        }

        return $req;
    }

    /** A Request of keys only (MGet, Has, Delete, TTL). */
    private function keysRequest(array $keys): string
    {
        $req = $this->head;
        foreach ($keys as $key) {
            $item = "\x0a" . self::len($key) . $key;
            $req .= "\x12" . self::len($item) . $item;
        }

        return $req;
    }

    /** The varint length prefix of $s (one byte below 128, as almost every key and many values). */
    private static function len(string $s): string
    {
        $n = strlen($s);

        return $n < 0x80 ? chr($n) : Proto::varint($n);
    }

    private function call(string $method, string $request): string
    {
        try {
            return (string) $this->rpc->call($method, $request);
        } catch (ServiceException $e) {
            $message = str_replace(["\t", "\n"], ' ', $e->getMessage());
            if (str_contains($message, 'no such storage')) {
                throw new StorageException("kv storage \"{$this->name}\" is not configured on the server", 0, $e);
            }
            throw new KVException($message, 0, $e);
        }
    }

    /** Response{items=1}: key => [value, timeout]. */
    private function items(string $method, string $request): array
    {
        $buf = $this->call($method, $request);
        $out = [];
        $pos = 0;
        $end = strlen($buf);
        while ($pos < $end) {
            [$field, $body] = self::field($buf, $pos, $end);
            if ($field !== 1 || $body === null) {
                continue;
            }
            $ip = 0;
            $ie = strlen($body);
            $item = [1 => '', 2 => '', 3 => ''];
            while ($ip < $ie) {
                [$f, $v] = self::field($body, $ip, $ie);
                if ($v !== null && isset($item[$f])) {
                    $item[$f] = $v;
                }
            }
            $out[$item[1]] = [$item[2], $item[3]];
        }

        return $out;
    }

    /** One field: [number, bytes] for length-delimited ones, [number, null] for varints. */
    private static function field(string $buf, int &$pos, int $end): array
    {
        $tag = self::varint($buf, $pos, $end);
        $wire = $tag & 7;
        if ($wire === 0) {
            self::varint($buf, $pos, $end);

            return [$tag >> 3, null];
        }
        if ($wire !== 2) {
            throw new KVException('unexpected wire type in kv.v1.Response');
        }
        $n = self::varint($buf, $pos, $end);
        if ($n < 0 || $pos + $n > $end) {
            throw new KVException('truncated kv.v1.Response');
        }
        $v = substr($buf, $pos, $n);
        $pos += $n;

        return [$tag >> 3, $v];
    }

    /** Tags and most lengths are one byte: read those without a call. */
    private static function varint(string $buf, int &$pos, int $end): int
    {
        if ($pos < $end && ($b = ord($buf[$pos])) < 0x80) {
            $pos++;

            return $b;
        }

        return Proto::readVarint($buf, $pos, $end);
    }
}
