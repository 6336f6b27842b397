<?php

declare(strict_types=1);

namespace Forkline\Logger;

use Forkline\Frame;
use Forkline\Http\Proto;
use Forkline\RPC;

/**
 * The application logger over RPC (service `app`, spec §9.3), the API of roadrunner-php/app-logger's
 * RoadRunner\Logger\Logger over Forkline\RPC: the lines go into forkline's own logs (logger
 * "app"), so they share its format, level filter and outputs.
 *
 *     $log = new Logger(RPC::create('tcp://127.0.0.1:6001'));
 *     $log->info('order placed', ['order' => 42, 'user' => 'alice']);
 *     $log->log("raw line to stderr\n");
 *
 * Without context the plain methods (app.Info, JSON) are used; with context the *WithContext
 * ones (applogger.v1.LogEntry, protobuf), whose attributes become structured log fields. Context
 * values that are not strings are sent as text: scalars as PHP prints them (true/false for
 * booleans, "null" for null), anything else as JSON.
 */
final class Logger
{
    private RPC $rpc;

    public function __construct(RPC $rpc)
    {
        $this->rpc = $rpc->withServicePrefix('app');
    }

    public function error(string $message, array $context = []): void
    {
        $this->send('Error', $message, $context);
    }

    public function warning(string $message, array $context = []): void
    {
        $this->send('Warning', $message, $context);
    }

    public function info(string $message, array $context = []): void
    {
        $this->send('Info', $message, $context);
    }

    public function debug(string $message, array $context = []): void
    {
        $this->send('Debug', $message, $context);
    }

    /** Written to the server's stderr as is (no newline added), context as key:value pairs. */
    public function log(string $message, array $context = []): void
    {
        $this->send('Log', $message, $context);
    }

    private function send(string $method, string $message, array $context): void
    {
        if ($context === []) {
            $this->rpc->call($method, $message);

            return;
        }
        // LogEntry{message=1, log_attrs=2 repeated LogAttrs{key=1, value=2}}
        $entry = Proto::lenField(1, $message);
        foreach ($context as $key => $value) {
            $entry .= Proto::lenField(2, Proto::lenField(1, (string) $key) . Proto::lenField(2, self::text($value)));
        }
        $this->rpc->withCodec(Frame::CODEC_PROTO)->call($method . 'WithContext', $entry);
    }

    private static function text(mixed $v): string
    {
        return match (true) {
            is_string($v) => $v,
            is_bool($v) => $v ? 'true' : 'false',
            $v === null => 'null',
            is_int($v), is_float($v) => (string) $v,
            $v instanceof \Stringable => (string) $v,
            default => (string) json_encode($v, JSON_UNESCAPED_SLASHES | JSON_PARTIAL_OUTPUT_ON_ERROR),
        };
    }
}
