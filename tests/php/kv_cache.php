<?php

/**
 * Forkline\KV\Cache (PSR-16 over kv.*) against a live forkline:
 *
 *   php tests/php/kv_cache.php tcp://127.0.0.1:PORT STORAGE
 *
 * Run by tests/integration/test_services.py for the memory and the redis driver.
 * Last line: "php kv_cache: N passed, M failed"; exit status 1 on failure.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';

use Forkline\KV\Cache;
use Forkline\KV\InvalidArgumentException;
use Forkline\KV\StorageException;
use Forkline\RPC;

$passed = 0;
$failed = 0;

function check(string $name, bool $ok, mixed $detail = ''): void
{
    global $passed, $failed;
    $ok ? $passed++ : $failed++;
    echo ($ok ? 'ok   - ' : 'FAIL - ') . $name . ($ok ? '' : ' ' . var_export($detail, true)) . "\n";
}

function throws(callable $fn, string $class): bool
{
    try {
        $fn();
    } catch (Throwable $e) {
        return $e instanceof $class;
    }

    return false;
}

[$dsn, $storage] = [$argv[1], $argv[2]];
$rpc = RPC::create($dsn);
$cache = new Cache($rpc, $storage);

check('clear', $cache->clear() === true);
check('set', $cache->set('a', ['x' => 1, 'y' => [true, null]]) === true);
check('get', $cache->get('a') === ['x' => 1, 'y' => [true, null]], $cache->get('a'));
$bin = "\x00\xff\r\n binary \x00";
$cache->set('bin', $bin);
check('binary value', $cache->get('bin') === $bin);
// lengths of 128 and more take a multi-byte varint (keys, values, the item around them)
$long = str_repeat('k', 200);
$cache->set($long, str_repeat('v', 300));
check('long key and value', $cache->get($long) === str_repeat('v', 300) && $cache->has($long));
check('missing gives the default', $cache->get('missing', 'dflt') === 'dflt');
check('has', $cache->has('a') && !$cache->has('missing'));
$cache->set('f', false);
$cache->set('n', null);
check('false and null values', $cache->get('f', 'd') === false && $cache->get('n', 'd') === null);

$cache->setMultiple(['m1' => 1, 'm2' => 2.5, 3 => 'int key']);
$got = $cache->getMultiple(['m1', 'm2', '3', 'nope'], 'd');
check('setMultiple / getMultiple', $got === ['m1' => 1, 'm2' => 2.5, '3' => 'int key', 'nope' => 'd'], $got);
check('deleteMultiple', $cache->deleteMultiple(['m1', 'm2']) && !$cache->has('m1') && !$cache->has('m2'));
check('delete', $cache->delete('3') && !$cache->has('3'));

$cache->set('t', 'short', 1);
$ttl = $cache->getTtl('t');
check('getTtl of an int ttl', $ttl instanceof DateTimeImmutable && abs($ttl->getTimestamp() - time() - 1) <= 1,
    $ttl);
check('getTtl without a ttl', $cache->getTtl('a') === null && $cache->getTtl('missing') === null);
$cache->set('di', 'long', new DateInterval('PT1H'));
$ttl = $cache->getTtl('di');
check('DateInterval ttl', $ttl instanceof DateTimeImmutable && abs($ttl->getTimestamp() - time() - 3600) <= 2,
    $ttl);
$cache->set('z', 'v');
$cache->set('z', 'v2', 0);
check('ttl 0 deletes (PSR-16)', !$cache->has('z'));
usleep(2_100_000);
check('ttl 1 s is gone after it', $cache->get('t', 'gone') === 'gone' && $cache->get('di') === 'long');

check('empty key', throws(fn () => $cache->get(''), InvalidArgumentException::class));
check('non-string key', throws(fn () => $cache->has(42), InvalidArgumentException::class));
check('bad ttl', throws(fn () => $cache->set('k', 'v', 'soon'), InvalidArgumentException::class));
check('unknown storage', throws(fn () => (new Cache($rpc, 'nope'))->get('a'), StorageException::class));

$cache->clear();
check('clear empties it', !$cache->has('a') && !$cache->has('bin'));

echo "php kv_cache: $passed passed, $failed failed\n";
exit($failed ? 1 : 0);
