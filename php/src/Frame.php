<?php

declare(strict_types=1);

namespace Forkline;

/**
 * One goridge protocol-v1 frame (spec §2).
 *
 *   offset 0   (1 << 4) | HL        HL = header length in 32-bit words, 3 + options
 *   offset 1   flags                CONTROL, CODEC_*, ERROR
 *   offset 2   payload length       u32 LE, bytes after header+options
 *   offset 6   CRC-32 of bytes 0..5 u32 LE
 *   offset 10  stream byte          STREAM, STOP, PING, PONG
 *   offset 11  reserved (0)
 *   offset 12  options              u32 LE each, at most 10
 *   then       payload
 */
final class Frame
{
    public const VERSION = 1;
    public const HEADER_SIZE = 12;
    public const MAX_OPTIONS = 10;

    // flags (byte 1)
    public const CONTROL = 0x01;
    public const CODEC_RAW = 0x04;
    public const CODEC_JSON = 0x08;
    public const CODEC_MSGPACK = 0x10;
    public const CODEC_GOB = 0x20;
    public const ERROR = 0x40;
    public const CODEC_PROTO = 0x80;

    // stream byte (byte 10)
    public const STREAM = 0x01;
    public const STOP = 0x02;
    public const PING = 0x04;
    public const PONG = 0x08;

    /**
     * @param list<int> $options u32 option words
     */
    public function __construct(
        public string $payload = '',
        public array $options = [],
        public int $flags = 0,
        public int $stream = 0,
    ) {
    }

    public function hasFlag(int $flag): bool
    {
        return ($this->flags & $flag) === $flag;
    }

    public function hasStream(int $bit): bool
    {
        return ($this->stream & $bit) === $bit;
    }

    /** CRC-32/IEEE of the first six header bytes (version/HL, flags, length). */
    public static function crc(string $first6): int
    {
        return crc32(substr($first6, 0, 6));
    }

    /** Serialise the whole frame (header, options, payload) into one string. */
    public function encode(): string
    {
        $n = count($this->options);
        if ($n > self::MAX_OPTIONS) {
            throw new ProtocolException("too many options: $n (max " . self::MAX_OPTIONS . ')');
        }
        $length = strlen($this->payload);
        if ($length > 0xFFFFFFFF) {
            throw new ProtocolException("payload too large: $length bytes");
        }

        return self::head($this->flags, $this->stream, $length, $this->options) . $this->payload;
    }

    /**
     * Header and options of a frame whose payload is $length bytes (no checks: the callers make
     * them). Worker::sendData() keeps the result for the next identical response.
     *
     * @param list<int> $options u32 option words, at most MAX_OPTIONS
     */
    public static function head(int $flags, int $stream, int $length, array $options = []): string
    {
        $head = pack('CCV', (self::VERSION << 4) | (3 + count($options)), $flags & 0xFF, $length);
        $head .= pack('VCC', crc32($head), $stream & 0xFF, 0);
        foreach ($options as $opt) {
            $head .= pack('V', $opt & 0xFFFFFFFF);
        }

        return $head;
    }

    /**
     * Parse a 12-byte header.
     *
     * @return array{version:int, hl:int, flags:int, length:int, crc:int, crcValid:bool, stream:int, optionsSize:int}
     */
    public static function decodeHeader(string $header): array
    {
        if (strlen($header) < self::HEADER_SIZE) {
            throw new ProtocolException('incorrect header size: ' . strlen($header));
        }
        /** @var array{b0:int, flags:int, length:int, crc:int, stream:int} $h */
        $h = unpack('Cb0/Cflags/Vlength/Vcrc/Cstream', $header);
        $hl = $h['b0'] & 0x0F;
        if ($hl < 3 || $hl > 3 + self::MAX_OPTIONS) {
            throw new ProtocolException("invalid header length HL=$hl");
        }

        return [
            'version' => $h['b0'] >> 4,
            'hl' => $hl,
            'flags' => $h['flags'],
            'length' => $h['length'],
            'crc' => $h['crc'],
            'crcValid' => crc32(substr($header, 0, 6)) === $h['crc'],
            'stream' => $h['stream'],
            'optionsSize' => 4 * ($hl - 3),
        ];
    }

    /**
     * Build a frame from a parsed header and the bytes that follow it
     * (options then payload).
     *
     * @param array{flags:int, stream:int, optionsSize:int, length:int} $header
     */
    public static function fromParts(array $header, string $rest): self
    {
        $optSize = $header['optionsSize'];
        if (strlen($rest) !== $optSize + $header['length']) {
            throw new ProtocolException('frame body size mismatch');
        }
        $options = $optSize > 0 ? array_values(unpack('V*', substr($rest, 0, $optSize))) : [];

        return new self(substr($rest, $optSize), $options, $header['flags'], $header['stream']);
    }

    /**
     * Decode exactly one complete frame.
     *
     * @param bool $verifyCrc throw on a header CRC mismatch
     * @param int|null $consumed set to the number of bytes the frame occupies
     */
    public static function decode(string $bytes, bool $verifyCrc = true, ?int &$consumed = null): self
    {
        $h = self::decodeHeader($bytes);
        if ($verifyCrc && !$h['crcValid']) {
            throw new ProtocolException(sprintf(
                'header CRC mismatch: got 0x%08x, expected 0x%08x',
                $h['crc'],
                crc32(substr($bytes, 0, 6)),
            ));
        }
        $total = self::HEADER_SIZE + $h['optionsSize'] + $h['length'];
        if (strlen($bytes) < $total) {
            throw new ProtocolException("truncated frame: have " . strlen($bytes) . " of $total bytes");
        }
        $consumed = $total;

        return self::fromParts($h, substr($bytes, self::HEADER_SIZE, $total - self::HEADER_SIZE));
    }
}
