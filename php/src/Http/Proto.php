<?php

declare(strict_types=1);

namespace Forkline\Http;

use Forkline\ProtocolException;

/**
 * Minimal pure-PHP protobuf codec for the http.v1 messages (spec §6.2).
 *
 *   Request  { 1 remote_addr, 2 protocol, 3 method, 4 uri,
 *              5 header map<string,HeaderValue>, 6 cookies map<...>,
 *              7 raw_query, 8 parsed bool, 9 uploads bytes(JSON),
 *              10 attributes map<...> }
 *   Response { 1 status int64, 2 headers map<string,HeaderValue> }
 *   HeaderValue { 1 repeated bytes value }
 *
 * Decoders accept fields in any order and skip unknown fields of every wire type.
 * Encoders write fields in field-number order and omit proto3 defaults.
 */
final class Proto
{
    public const WIRE_VARINT = 0;
    public const WIRE_FIXED64 = 1;
    public const WIRE_LEN = 2;
    public const WIRE_SGROUP = 3;
    public const WIRE_EGROUP = 4;
    public const WIRE_FIXED32 = 5;

    private const MAX_DEPTH = 64;

    /**
     * Decode http.v1.Request. With $maps = false the map fields (headers,
     * cookies, attributes) are only checked for their length and left out
     * (Request::fromProto() decodes them when they are first read).
     *
     * @return array{remoteAddr:string, protocol:string, method:string, uri:string,
     *               headers:array<string,list<string>>, cookies:array<string,list<string>>,
     *               rawQuery:string, parsed:bool, uploads:string, attributes:array<string,list<string>>}
     */
    public static function decodeRequest(string $buf, bool $maps = true): array
    {
        $r = [
            'remoteAddr' => '', 'protocol' => '', 'method' => '', 'uri' => '',
            'headers' => [], 'cookies' => [], 'rawQuery' => '', 'parsed' => false,
            'uploads' => '', 'attributes' => [],
        ];
        // Runs once per request: tags and lengths are decoded inline for the
        // one-byte case (every field number here is < 16, most strings are
        // < 128 bytes); readVarint() handles the rest. Map entries are decoded
        // in place, without copying them out of $buf first.
        $pos = 0;
        $end = strlen($buf);
        while ($pos < $end) {
            $tag = ord($buf[$pos]);
            if ($tag < 0x80) {
                ++$pos;
            } else {
                $tag = self::readVarint($buf, $pos, $end);
            }
            $field = ($tag >> 3) & 0x1FFFFFFFFFFFFFFF;
            $wire = $tag & 0x07;
            if ($field === 0) {
                throw new ProtocolException('protobuf: invalid field number 0');
            }
            if ($wire !== self::WIRE_LEN || $field === 8 || $field > 10) {
                if ($field === 8 && $wire === self::WIRE_VARINT) {
                    $r['parsed'] = self::readVarint($buf, $pos, $end) !== 0;
                } else {
                    self::skipField($buf, $pos, $end, $wire, $field);
                }
                continue;
            }
            if ($pos < $end && ($len = ord($buf[$pos])) < 0x80) {
                ++$pos;
            } else {
                $len = self::readVarint($buf, $pos, $end);
            }
            if ($len < 0 || $len > $end - $pos) {
                throw new ProtocolException('protobuf: length-delimited field exceeds message');
            }
            switch ($field) {
                case 1: $r['remoteAddr'] = substr($buf, $pos, $len); break;
                case 2: $r['protocol'] = substr($buf, $pos, $len); break;
                case 3: $r['method'] = substr($buf, $pos, $len); break;
                case 4: $r['uri'] = substr($buf, $pos, $len); break;
                case 7: $r['rawQuery'] = substr($buf, $pos, $len); break;
                case 9: $r['uploads'] = substr($buf, $pos, $len); break;
                default: // 5 headers, 6 cookies, 10 attributes
                    if ($maps) {
                        [$k, $v] = self::decodeMapEntry($buf, $pos, $pos + $len);
                        $r[$field === 5 ? 'headers' : ($field === 6 ? 'cookies' : 'attributes')][$k] = $v;
                    }
            }
            $pos += $len;
        }

        return $r;
    }

    /**
     * Encode http.v1.Request (used by tests and drivers to play the server).
     *
     * @param array<string,mixed> $req keys as returned by decodeRequest(); missing keys are defaults
     */
    public static function encodeRequest(array $req): string
    {
        $out = '';
        foreach ([1 => 'remoteAddr', 2 => 'protocol', 3 => 'method', 4 => 'uri'] as $no => $key) {
            $out .= self::stringField($no, (string) ($req[$key] ?? ''));
        }
        $out .= self::encodeMap(5, $req['headers'] ?? []);
        $out .= self::encodeMap(6, $req['cookies'] ?? []);
        $out .= self::stringField(7, (string) ($req['rawQuery'] ?? ''));
        if (!empty($req['parsed'])) {
            $out .= self::tag(8, self::WIRE_VARINT) . self::varint(1);
        }
        $out .= self::stringField(9, (string) ($req['uploads'] ?? ''));
        $out .= self::encodeMap(10, $req['attributes'] ?? []);

        return $out;
    }

    /**
     * Encode http.v1.Response.
     *
     * @param array<string,list<string>> $headers already normalised: name => list of strings
     */
    public static function encodeResponse(int $status, array $headers): string
    {
        $out = $status !== 0 ? "\x08" . self::varint($status) : ''; // field 1, VARINT

        return $out . self::encodeMap(2, $headers);
    }

    /**
     * Decode http.v1.Response (tests / drivers).
     *
     * @return array{status:int, headers:array<string,list<string>>}
     */
    public static function decodeResponse(string $buf): array
    {
        $r = ['status' => 0, 'headers' => []];
        $pos = 0;
        $end = strlen($buf);
        while ($pos < $end) {
            [$field, $wire] = self::readTag($buf, $pos, $end);
            if ($field === 1 && $wire === self::WIRE_VARINT) {
                $r['status'] = self::readVarint($buf, $pos, $end);
            } elseif ($field === 2 && $wire === self::WIRE_LEN) {
                $len = self::readLength($buf, $pos, $end);
                [$k, $v] = self::decodeMapEntry($buf, $pos, $pos + $len);
                $r['headers'][$k] = $v;
                $pos += $len;
            } else {
                self::skipField($buf, $pos, $end, $wire, $field);
            }
        }

        return $r;
    }

    // ---------------------------------------------------------------- encoding

    public static function varint(int $v): string
    {
        $out = '';
        // negative numbers are 64-bit two's complement: 10 bytes; use logical shifts
        while (true) {
            $byte = $v & 0x7F;
            $v = ($v >> 7) & 0x01FFFFFFFFFFFFFF;
            if ($v === 0) {
                return $out . chr($byte);
            }
            $out .= chr($byte | 0x80);
        }
    }

    public static function tag(int $field, int $wire): string
    {
        return self::varint(($field << 3) | $wire);
    }

    public static function lenField(int $field, string $bytes): string
    {
        $n = strlen($bytes);
        if ($field >= 0 && $field < 16 && $n < 0x80) { // one-byte tag and length: every header of a typical response
            return chr(($field << 3) | self::WIRE_LEN) . chr($n) . $bytes;
        }

        return self::tag($field, self::WIRE_LEN) . self::varint($n) . $bytes;
    }

    private static function stringField(int $field, string $value): string
    {
        return $value === '' ? '' : self::lenField($field, $value);
    }

    /**
     * map<string, HeaderValue>: each key one entry { 1: key, 2: HeaderValue { repeated 1: value } }.
     *
     * @param array<array-key,mixed> $map
     */
    private static function encodeMap(int $field, array $map): string
    {
        $out = '';
        foreach ($map as $key => $values) {
            $hv = '';
            foreach (is_array($values) ? $values : [$values] as $v) {
                $hv .= self::lenField(1, (string) $v);
            }
            $out .= self::lenField($field, self::lenField(1, (string) $key) . self::lenField(2, $hv));
        }

        return $out;
    }

    // ---------------------------------------------------------------- decoding

    /** @return array{0:int, 1:int} field number, wire type */
    private static function readTag(string $buf, int &$pos, int $end): array
    {
        $key = self::readVarint($buf, $pos, $end);
        $field = ($key >> 3) & 0x1FFFFFFFFFFFFFFF;
        if ($field === 0) {
            throw new ProtocolException('protobuf: invalid field number 0');
        }

        return [$field, $key & 0x07];
    }

    public static function readVarint(string $buf, int &$pos, int $end): int
    {
        $result = 0;
        for ($shift = 0; $shift < 64; $shift += 7) {
            if ($pos >= $end) {
                throw new ProtocolException('protobuf: truncated varint');
            }
            $b = ord($buf[$pos++]);
            $result |= ($b & 0x7F) << $shift;
            if ($b < 0x80) {
                return $result;
            }
        }
        throw new ProtocolException('protobuf: varint longer than 10 bytes');
    }

    /** Length prefix of a LEN field, checked against the bytes left. */
    private static function readLength(string $buf, int &$pos, int $end): int
    {
        $len = self::readVarint($buf, $pos, $end);
        if ($len < 0 || $len > $end - $pos) {
            throw new ProtocolException('protobuf: length-delimited field exceeds message');
        }

        return $len;
    }

    private static function readBytes(string $buf, int &$pos, int $end): string
    {
        $len = self::readLength($buf, $pos, $end);
        $s = substr($buf, $pos, $len);
        $pos += $len;

        return $s;
    }

    private static function skipField(string $buf, int &$pos, int $end, int $wire, int $field, int $depth = 0): void
    {
        switch ($wire) {
            case self::WIRE_VARINT:
                self::readVarint($buf, $pos, $end);
                return;
            case self::WIRE_FIXED64:
                $n = 8;
                break;
            case self::WIRE_FIXED32:
                $n = 4;
                break;
            case self::WIRE_LEN:
                self::readBytes($buf, $pos, $end);
                return;
            case self::WIRE_SGROUP:
                if ($depth >= self::MAX_DEPTH) {
                    throw new ProtocolException('protobuf: groups nested too deeply');
                }
                while (true) {
                    if ($pos >= $end) {
                        throw new ProtocolException('protobuf: unterminated group');
                    }
                    [$f, $w] = self::readTag($buf, $pos, $end);
                    if ($w === self::WIRE_EGROUP) {
                        if ($f !== $field) {
                            throw new ProtocolException('protobuf: mismatched end group');
                        }
                        return;
                    }
                    self::skipField($buf, $pos, $end, $w, $f, $depth + 1);
                }
                // no break: the loop always returns or throws
            default:
                throw new ProtocolException("protobuf: invalid wire type $wire for field $field");
        }
        if ($end - $pos < $n) {
            throw new ProtocolException('protobuf: truncated fixed-width field');
        }
        $pos += $n;
    }

    /**
     * One map<string, HeaderValue> entry: $buf[$pos, $end).
     *
     * @return array{0:string, 1:list<string>}
     */
    private static function decodeMapEntry(string $buf, int $pos, int $end): array
    {
        $key = '';
        $values = [];
        while ($pos < $end) {
            $tag = ord($buf[$pos]);
            if ($tag === 0x0A || $tag === 0x12) { // field 1 or 2, LEN: the only ones the server writes
                ++$pos;
                $field = $tag >> 3;
            } else {
                [$field, $wire] = self::readTag($buf, $pos, $end);
                if (($field !== 1 && $field !== 2) || $wire !== self::WIRE_LEN) {
                    self::skipField($buf, $pos, $end, $wire, $field);
                    continue;
                }
            }
            if ($pos < $end && ($len = ord($buf[$pos])) < 0x80) {
                ++$pos;
            } else {
                $len = self::readVarint($buf, $pos, $end);
            }
            if ($len < 0 || $len > $end - $pos) {
                throw new ProtocolException('protobuf: length-delimited field exceeds message');
            }
            if ($field === 1) {
                $key = substr($buf, $pos, $len);
            } elseif ($values === []) {
                $values = self::decodeHeaderValue($buf, $pos, $pos + $len);
            } else {
                // a repeated message field merges: concatenate values
                $values = array_merge($values, self::decodeHeaderValue($buf, $pos, $pos + $len));
            }
            $pos += $len;
        }

        return [$key, $values];
    }

    /**
     * HeaderValue { repeated bytes value = 1 }: $buf[$pos, $end).
     *
     * @return list<string>
     */
    private static function decodeHeaderValue(string $buf, int $pos, int $end): array
    {
        $values = [];
        while ($pos < $end) {
            if (ord($buf[$pos]) === 0x0A) { // field 1, LEN
                ++$pos;
            } else {
                [$field, $wire] = self::readTag($buf, $pos, $end);
                if ($field !== 1 || $wire !== self::WIRE_LEN) {
                    self::skipField($buf, $pos, $end, $wire, $field);
                    continue;
                }
            }
            if ($pos < $end && ($len = ord($buf[$pos])) < 0x80) {
                ++$pos;
            } else {
                $len = self::readVarint($buf, $pos, $end);
            }
            if ($len < 0 || $len > $end - $pos) {
                throw new ProtocolException('protobuf: length-delimited field exceeds message');
            }
            $values[] = substr($buf, $pos, $len);
            $pos += $len;
        }

        return $values;
    }
}
