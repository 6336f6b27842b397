<?php

declare(strict_types=1);

namespace Forkline\Http;

/**
 * A decoded HTTP request (spec §6.3–§6.5), independent of the wire codec.
 *
 * Requests built by fromContext()/fromProto() (i.e. by HttpWorker) fill
 * headers, cookies, query, parsedBody, uploads and attributes on first read:
 * a hello-world route reads none of them, and decoding a browser's dozen
 * headers and cookies, parse_str() and json_decode() would cost more than the
 * whole rest of the request. The fields stay public readonly properties: such
 * a property is left unset, so reading it calls __get(), which initialises it
 * once (allowed for an unset readonly property inside the class); later reads
 * are plain property reads. Reads, isset() and empty() behave as before;
 * var_dump()/print_r() show every field (__debugInfo); get_object_vars(),
 * (array) and var_export() list a lazy field only once it has been read.
 */
final class Request
{
    /** The lazily built fields. */
    private const LAZY = ['headers' => 1, 'cookies' => 1, 'query' => 1, 'parsedBody' => 1, 'uploads' => 1, 'attributes' => 1];

    /** An instance with every property unset, cloned for each request (see fromContext()). */
    private static ?self $blank = null;

    /** @var array<string, mixed> codec-neutral context the lazy fields are built from */
    private array $ctx = [];
    private bool $proto = false;
    /** proto context whose map fields (headers, cookies, attributes) are not decoded yet */
    private ?string $protoMaps = null;
    /** @var array<string, true> lazy fields already initialised */
    private array $ready = [];

    /**
     * @param array<string, list<string>> $headers name => values (Go canonical names, no Host)
     * @param array<string, string> $cookies name => value
     * @param array<array-key, mixed> $query parse_str() of $rawQuery
     * @param array<array-key, mixed>|null $parsedBody json_decode($body) when $parsed, else null
     * @param array<array-key, mixed> $uploads decoded JSON upload tree (§6.5), [] when none
     * @param array<string, mixed> $attributes values set by server middleware
     */
    public function __construct(
        public readonly string $remoteAddr = '',
        public readonly string $protocol = 'HTTP/1.1',
        public readonly string $method = 'GET',
        public readonly string $uri = '',
        public readonly array $headers = [],
        public readonly array $cookies = [],
        public readonly string $rawQuery = '',
        public readonly array $query = [],
        public readonly string $body = '',
        public readonly bool $parsed = false,
        public readonly ?array $parsedBody = null,
        public readonly array $uploads = [],
        public readonly array $attributes = [],
    ) {
    }

    /**
     * Build from the codec-neutral field array (keys as Proto::decodeRequest()
     * returns, or the legacy JSON context keys) and the task body.
     *
     * @param array<string, mixed> $ctx
     * @param bool $proto map values are lists (proto, as Proto::decodeRequest() returns) rather than JSON values
     */
    public static function fromContext(array $ctx, string $body, bool $proto): self
    {
        // clone + assign: cheaper than the 13-argument constructor, and leaves the lazy fields unset
        $r = clone (self::$blank ??= self::blank());
        $r->remoteAddr = (string) ($ctx['remoteAddr'] ?? '');
        $r->protocol = (string) ($ctx['protocol'] ?? '');
        $r->method = (string) ($ctx['method'] ?? '');
        $r->uri = (string) ($ctx['uri'] ?? '');
        $r->rawQuery = (string) ($ctx['rawQuery'] ?? '');
        $r->body = $body;
        $r->parsed = (bool) ($ctx['parsed'] ?? false);
        $r->ctx = $ctx;
        $r->proto = $proto;

        return $r;
    }

    /**
     * Build from an http.v1 protobuf context (spec §6.3): the scalar fields now,
     * the maps when one of headers, cookies or attributes is first read.
     */
    public static function fromProto(string $context, string $body): self
    {
        $r = self::fromContext(Proto::decodeRequest($context, false), $body, true);
        $r->protoMaps = $context;

        return $r;
    }

    /** Initialises a lazy field on its first read (see the class comment). */
    public function __get(string $name): mixed
    {
        if (!isset(self::LAZY[$name])) {
            trigger_error('Undefined property: ' . self::class . '::$' . $name, E_USER_WARNING);

            return null;
        }
        if (isset($this->ready[$name])) {
            return $this->$name; // isset($req->cookies['x']) calls __isset() and then __get() again
        }
        if ($this->protoMaps !== null) {
            $maps = Proto::decodeRequest($this->protoMaps);
            $this->protoMaps = null;
            $this->ctx['headers'] = $maps['headers'];
            $this->ctx['cookies'] = $maps['cookies'];
            $this->ctx['attributes'] = $maps['attributes'];
        }
        $ctx = $this->ctx;
        switch ($name) {
            case 'headers':
                $this->headers = self::headersOf($ctx['headers'] ?? [], $this->proto);
                break;
            case 'cookies':
                $cookies = [];
                foreach ((array) ($ctx['cookies'] ?? []) as $k => $value) {
                    $cookies[(string) $k] = is_array($value) ? implode(',', array_map('strval', $value)) : (string) $value;
                }
                $this->cookies = $cookies;
                break;
            case 'attributes':
                $attributes = [];
                foreach ((array) ($ctx['attributes'] ?? []) as $k => $value) {
                    // proto: HeaderValue list, PHP takes the first value; JSON: any value
                    $attributes[(string) $k] = $this->proto && is_array($value) ? ($value[0] ?? null) : $value;
                }
                $this->attributes = $attributes;
                break;
            case 'query':
                $query = [];
                if ($this->rawQuery !== '') {
                    parse_str($this->rawQuery, $query);
                }
                $this->query = $query;
                break;
            case 'uploads':
                $uploads = $ctx['uploads'] ?? [];
                if (is_string($uploads)) {
                    $uploads = $uploads === '' ? [] : json_decode($uploads, true);
                }
                $this->uploads = is_array($uploads) ? $uploads : [];
                break;
            case 'parsedBody':
                $parsedBody = null;
                if ($this->parsed) {
                    $decoded = json_decode($this->body === '' ? '{}' : $this->body, true);
                    $parsedBody = is_array($decoded) ? $decoded : [];
                }
                $this->parsedBody = $parsedBody;
                break;
        }
        $this->ready[$name] = true;

        return $this->$name;
    }

    public function __isset(string $name): bool
    {
        return isset(self::LAZY[$name]) && $this->__get($name) !== null;
    }

    /** @return array<string, mixed> every public field, lazy ones initialised */
    public function __debugInfo(): array
    {
        $out = [];
        foreach (['remoteAddr', 'protocol', 'method', 'uri', 'headers', 'cookies', 'rawQuery', 'query', 'body',
            'parsed', 'parsedBody', 'uploads', 'attributes'] as $name) {
            $out[$name] = $this->$name;
        }

        return $out;
    }

    /**
     * name => list of strings; proto maps already are exactly that.
     *
     * @return array<string, list<string>>
     */
    private static function headersOf(mixed $map, bool $proto): array
    {
        if ($proto && is_array($map)) {
            return $map;
        }
        $headers = [];
        foreach ((array) $map as $name => $values) {
            $list = [];
            foreach (is_array($values) ? $values : [$values] as $v) {
                $list[] = is_scalar($v) ? (string) $v : '';
            }
            $headers[(string) $name] = $list;
        }

        return $headers;
    }

    private static function blank(): self
    {
        $r = (new \ReflectionClass(self::class))->newInstanceWithoutConstructor();
        unset($r->remoteAddr, $r->protocol, $r->method, $r->uri, $r->headers, $r->cookies, $r->rawQuery,
            $r->query, $r->body, $r->parsed, $r->parsedBody, $r->uploads, $r->attributes);

        return $r;
    }

    /** Path part of the URI ("/" when absent). */
    public function path(): string
    {
        $path = parse_url($this->uri, PHP_URL_PATH);

        return is_string($path) && $path !== '' ? $path : '/';
    }

    /** First value of a header, case-insensitive, or $default. */
    public function header(string $name, ?string $default = null): ?string
    {
        $values = $this->headerValues($name);

        return $values[0] ?? $default;
    }

    /** @return list<string> all values of a header, case-insensitive */
    public function headerValues(string $name): array
    {
        if (isset($this->headers[$name])) {
            return $this->headers[$name];
        }
        foreach ($this->headers as $k => $v) {
            if (strcasecmp((string) $k, $name) === 0) {
                return $v;
            }
        }

        return [];
    }

    /** @return array<array-key, mixed>|null */
    public function getParsedBody(): ?array
    {
        return $this->parsedBody;
    }
}
