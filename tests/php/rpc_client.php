<?php

/**
 * RPC from PHP with the library's client (php/src/RPC.php), for the integration tests.
 *
 *   php tests/php/rpc_client.php DSN workers [plugin]   informer.Workers: prints the reply as JSON
 *   php tests/php/rpc_client.php DSN reset [plugin]     resetter.Reset: prints true
 *   php tests/php/rpc_client.php DSN list               informer.List through withServicePrefix
 *   php tests/php/rpc_client.php DSN call METHOD JSON   any JSON call
 *   php tests/php/rpc_client.php DSN loop N             N informer.List calls on one connection
 *
 * Prints one JSON line {"ok": reply} or {"error": message, "class": exception class}.
 */

declare(strict_types=1);

require __DIR__ . '/../../php/src/autoload.php';

use Forkline\RPC;

[$dsn, $cmd] = [$argv[1] ?? '', $argv[2] ?? ''];
$rpc = RPC::create($dsn);
try {
    switch ($cmd) {
        case 'workers':
            $out = $rpc->call('informer.Workers', $argv[3] ?? 'http');
            break;
        case 'reset':
            $out = $rpc->call('resetter.Reset', $argv[3] ?? 'http');
            break;
        case 'list':
            $out = $rpc->withServicePrefix('informer')->call('list', true);
            break;
        case 'call':
            $out = $rpc->call($argv[3], json_decode($argv[4] ?? 'null', true, 512, JSON_THROW_ON_ERROR));
            break;
        case 'loop':
            $out = 0;
            for ($i = 0; $i < (int) ($argv[3] ?? 1); $i++) {
                $rpc->call('informer.List', true);
                $out++;
            }
            break;
        default:
            fwrite(STDERR, "usage: rpc_client.php DSN workers|reset|list|call|loop ...\n");
            exit(2);
    }
    echo json_encode(['ok' => $out], JSON_UNESCAPED_SLASHES), "\n";
} catch (\Throwable $e) {
    echo json_encode(['error' => $e->getMessage(), 'class' => $e::class], JSON_UNESCAPED_SLASHES), "\n";
    exit(1);
}
