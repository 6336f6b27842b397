<?php

declare(strict_types=1);

namespace Forkline;

/**
 * Goridge RPC client (spec goridge-and-worker-protocol.md §9.1), used like
 * spiral/goridge's Spiral\Goridge\RPC\RPC:
 *
 *   $rpc = RPC::create('tcp://127.0.0.1:6001');     // or unix:///path, or getenv('RR_RPC')
 *   $rpc->call('informer.Workers', 'http');         // ['workers' => [...]]
 *   $rpc->call('resetter.Reset', 'http');           // true
 *   $rpc->withServicePrefix('informer')->call('list', true);   // informer.List
 *   $rpc->withCodec(Frame::CODEC_PROTO)->call('kv.Has', $bytes);
 *
 * A request carries two options [seq, length of the method name] and one
 * codec bit; the payload is the method name followed by the encoded
 * argument. The reply echoes both. Codecs: JSON (default: json_encode /
 * json_decode to arrays), RAW (strings both ways), PROTO (a serialized
 * message, or an object with serializeToString(); the reply is decoded into
 * $options when it names a class with mergeFromString(), else returned as
 * bytes).
 *
 * The sequence number is one counter per PHP process, shared by every RPC
 * object, starting at 1 and advanced after each successful call (as goridge).
 */
final class RPC
{
    private static int $seq = 1;

    public function __construct(
        private readonly Relay $relay,
        private readonly int $codec = Frame::CODEC_JSON,
        private readonly string $service = '',
    ) {
        if (!in_array($codec, [Frame::CODEC_JSON, Frame::CODEC_RAW, Frame::CODEC_PROTO], true)) {
            throw new RPCException("unsupported codec 0x" . dechex($codec) . ' (JSON, RAW or PROTO)');
        }
    }

    /** RPC over "tcp://host:port" or "unix:///path"; null reads RR_RPC. */
    public static function create(?string $dsn = null): self
    {
        if ($dsn === null) {
            $env = getenv('RR_RPC');
            $dsn = is_string($env) && $env !== '' ? $env : 'tcp://127.0.0.1:6001';
        }
        if (!str_starts_with($dsn, 'tcp://') && !str_starts_with($dsn, 'unix://')) {
            throw new RPCException("invalid RPC address $dsn (tcp://host:port or unix:///path)");
        }

        return new self(Relay::create($dsn));
    }

    /** Calls "prefix.Method" for call('method'): the first letter is upper-cased. */
    public function withServicePrefix(string $service): self
    {
        return new self($this->relay, $this->codec, $service);
    }

    public function withCodec(int $codec): self
    {
        return new self($this->relay, $codec, $this->service);
    }

    /**
     * @param mixed $payload the argument (encoded with the current codec)
     * @param mixed $options PROTO: a class name to decode the reply into
     * @return mixed the decoded reply
     * @throws ServiceException the server answered with an error
     * @throws RPCException a malformed reply
     * @throws RelayException the connection failed
     */
    public function call(string $method, mixed $payload, mixed $options = null): mixed
    {
        $method = $this->service !== '' ? $this->service . '.' . ucfirst($method) : $method;
        $seq = self::$seq;
        $this->relay->send(new Frame($method . $this->encode($payload), [$seq, strlen($method)], $this->codec));
        $frame = $this->relay->waitFrame();
        if (count($frame->options) !== 2) {
            throw new RPCException('Invalid RPC frame, options missing');
        }
        if ($frame->options[0] !== $seq) {
            throw new RPCException('Invalid RPC frame, sequence mismatch');
        }
        self::$seq++;
        $body = (string) substr($frame->payload, $frame->options[1]);
        if ($frame->hasFlag(Frame::ERROR)) {
            throw new ServiceException(sprintf("Error '%s' on %s", $body, (string) $this->relay->address()));
        }

        return $this->decode($frame->flags, $body, $options);
    }

    private function encode(mixed $payload): string
    {
        switch ($this->codec) {
            case Frame::CODEC_JSON:
                return json_encode($payload, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES);
            case Frame::CODEC_RAW:
                if (!is_string($payload)) {
                    throw new RPCException('the raw codec sends strings only, got ' . get_debug_type($payload));
                }

                return $payload;
            default:
                if (is_string($payload)) {
                    return $payload;
                }
                if (is_object($payload) && method_exists($payload, 'serializeToString')) {
                    return $payload->serializeToString();
                }
                throw new RPCException('the proto codec sends a serialized message, got ' . get_debug_type($payload));
        }
    }

    private function decode(int $flags, string $body, mixed $options): mixed
    {
        if ($flags & Frame::CODEC_PROTO) {
            if (is_string($options) && class_exists($options) && method_exists($options, 'mergeFromString')) {
                $msg = new $options();
                $msg->mergeFromString($body);

                return $msg;
            }

            return $body;
        }
        if ($flags & Frame::CODEC_JSON) {
            try {
                return json_decode($body, true, 512, JSON_THROW_ON_ERROR);
            } catch (\JsonException $e) {
                throw new RPCException('undecodable JSON reply: ' . $e->getMessage(), 0, $e);
            }
        }

        return $body;
    }
}
