<?php

declare(strict_types=1);

namespace Forkline\KV;

/*
 * The kv cache client (see CacheBase). It implements Psr\SimpleCache\CacheInterface when that
 * interface is loadable (any of psr/simple-cache 1, 2 or 3: the methods take untyped keys and
 * declare return types, which is compatible with all three); without it, it is a plain class with
 * the same methods.
 */
if (interface_exists(\Psr\SimpleCache\CacheInterface::class)) {
    final class Cache extends CacheBase implements \Psr\SimpleCache\CacheInterface
    {
    }
} else {
    final class Cache extends CacheBase
    {
    }
}
