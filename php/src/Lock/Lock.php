<?php

declare(strict_types=1);

namespace Forkline\Lock;

use Forkline\Frame;
use Forkline\Http\Proto;
use Forkline\RPC;

/**
 * Client for the lock.* RPC methods (protobuf lock.v1beta1, spec §9.3), the API of
 * roadrunner-php/lock's RoadRunner\Lock\Lock over Forkline\RPC:
 *
 *     $lock = new Lock(RPC::create('tcp://127.0.0.1:6001'));
 *     if (($id = $lock->lock('invoice:42', ttl: 10, waitTTL: 5)) !== false) {
 *         try { ... } finally { $lock->release('invoice:42', $id); }
 *     }
 *
 * Times are seconds (int, float or DateInterval) and travel as microseconds. ttl 0 = about a
 * year on the server; waitTTL 0 = one try (the server waits 1 ms). A lock whose owner dies
 * without releasing it is freed when its ttl ends.
 */
final class Lock
{
    private RPC $rpc;
    /** @var \Closure(): string */
    private \Closure $identity;

    /** @param null|\Closure(): string $identity makes the owner ids (default: a random UUIDv4) */
    public function __construct(RPC $rpc, ?\Closure $identity = null)
    {
        $this->rpc = $rpc->withCodec(Frame::CODEC_PROTO);
        $this->identity = $identity ?? static fn (): string => self::uuid();
    }

    /** An exclusive lock: the owner id on success, false when it could not be had in time. */
    public function lock(string $resource, ?string $id = null, int|float|\DateInterval $ttl = 0,
                         int|float|\DateInterval $waitTTL = 0): false|string
    {
        $id ??= ($this->identity)();

        return $this->call('lock.Lock', $resource, $id, $ttl, $waitTTL) ? $id : false;
    }

    /** A shared (read) lock: any number of readers, no writer. */
    public function lockRead(string $resource, ?string $id = null, int|float|\DateInterval $ttl = 0,
                             int|float|\DateInterval $waitTTL = 0): false|string
    {
        $id ??= ($this->identity)();

        return $this->call('lock.LockRead', $resource, $id, $ttl, $waitTTL) ? $id : false;
    }

    public function release(string $resource, string $id): bool
    {
        return $this->call('lock.Release', $resource, $id, 0, 0);
    }

    /** Releases the lock whoever holds it. */
    public function forceRelease(string $resource): bool
    {
        return $this->call('lock.ForceRelease', $resource, '', 0, 0);
    }

    /** Whether the lock is held (by $id, or by anyone when $id is null). */
    public function exists(string $resource, ?string $id = null): bool
    {
        return $this->call('lock.Exists', $resource, $id ?? '*', 0, 0);
    }

    /** A new ttl for the lock $id holds; false when it does not hold it. */
    public function updateTTL(string $resource, string $id, int|float|\DateInterval $ttl): bool
    {
        return $this->call('lock.UpdateTTL', $resource, $id, $ttl, 0);
    }

    /** Request{resource=1, id=2, ttl=3, wait=4} (ttl and wait always sent) → Response{ok=1}. */
    private function call(string $method, string $resource, string $id, int|float|\DateInterval $ttl,
                          int|float|\DateInterval $wait): bool
    {
        $req = Proto::lenField(1, $resource) . Proto::lenField(2, $id)
            . Proto::tag(3, 0) . Proto::varint(self::micros($ttl))
            . Proto::tag(4, 0) . Proto::varint(self::micros($wait));
        $reply = (string) $this->rpc->call($method, $req);
        $pos = 0;
        $end = strlen($reply);
        $ok = false;
        while ($pos < $end) {
            $tag = Proto::readVarint($reply, $pos, $end);
            if ($tag === (1 << 3)) {
                $ok = Proto::readVarint($reply, $pos, $end) !== 0;
            } elseif (($tag & 7) === 0) {
                Proto::readVarint($reply, $pos, $end);
            } else {
                throw new \UnexpectedValueException('unexpected field in lock.v1beta1.Response');
            }
        }

        return $ok;
    }

    private static function micros(int|float|\DateInterval $t): int
    {
        if ($t instanceof \DateInterval) {
            $now = new \DateTimeImmutable();
            $later = $now->add($t);
            $t = (float) $later->format('U.u') - (float) $now->format('U.u');
        }

        return $t > 0 ? (int) round($t * 1_000_000) : 0;
    }

    private static function uuid(): string
    {
        $b = random_bytes(16);
        $b[6] = chr(ord($b[6]) & 0x0f | 0x40);
        $b[8] = chr(ord($b[8]) & 0x3f | 0x80);

        return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($b), 4));
    }
}
