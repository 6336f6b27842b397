<?php

declare(strict_types=1);

namespace Forkline\Http;

/**
 * A decoded HTTP request (spec §6.3–§6.5), independent of the wire codec.
 */
final class Request
{
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
     * @param bool $proto map values are lists (proto) rather than JSON values
     */
    public static function fromContext(array $ctx, string $body, bool $proto): self
    {
        $headers = [];
        foreach ((array) ($ctx['headers'] ?? []) as $name => $values) {
            $headers[(string) $name] = array_values(array_map(
                static fn (mixed $v): string => is_scalar($v) ? (string) $v : '',
                is_array($values) ? $values : [$values],
            ));
        }

        $cookies = [];
        foreach ((array) ($ctx['cookies'] ?? []) as $name => $value) {
            $cookies[(string) $name] = is_array($value) ? implode(',', array_map('strval', $value)) : (string) $value;
        }

        $attributes = [];
        foreach ((array) ($ctx['attributes'] ?? []) as $name => $value) {
            // proto: HeaderValue list, PHP takes the first value; JSON: any value
            $attributes[(string) $name] = $proto && is_array($value) ? ($value[0] ?? null) : $value;
        }

        $uploads = $ctx['uploads'] ?? [];
        if (is_string($uploads)) {
            $uploads = $uploads === '' ? [] : json_decode($uploads, true);
        }
        if (!is_array($uploads)) {
            $uploads = [];
        }

        $rawQuery = (string) ($ctx['rawQuery'] ?? '');
        $query = [];
        parse_str($rawQuery, $query);

        $parsed = (bool) ($ctx['parsed'] ?? false);
        $parsedBody = null;
        if ($parsed) {
            $decoded = json_decode($body === '' ? '{}' : $body, true);
            $parsedBody = is_array($decoded) ? $decoded : [];
        }

        return new self(
            remoteAddr: (string) ($ctx['remoteAddr'] ?? ''),
            protocol: (string) ($ctx['protocol'] ?? ''),
            method: (string) ($ctx['method'] ?? ''),
            uri: (string) ($ctx['uri'] ?? ''),
            headers: $headers,
            cookies: $cookies,
            rawQuery: $rawQuery,
            query: $query,
            body: $body,
            parsed: $parsed,
            parsedBody: $parsedBody,
            uploads: $uploads,
            attributes: $attributes,
        );
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
