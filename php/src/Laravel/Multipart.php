<?php

declare(strict_types=1);

namespace Forkline\Laravel;

use Illuminate\Http\UploadedFile;

/**
 * multipart/form-data parsing for bodies that reach the worker raw (`http.raw_body: true`):
 * what PHP does before a php-fpm script runs. Field names nest PHP-style (`a[b][]`); file parts
 * are written to temporary files the caller must delete after the request.
 */
final class Multipart
{
    /**
     * @param list<string> $tempFiles appended with every temporary file created
     * @return array{0: array<array-key, mixed>, 1: array<array-key, mixed>} fields and files
     */
    public static function parse(string $body, string $contentType, array &$tempFiles): array
    {
        if (!preg_match('/boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))/i', $contentType, $m)) {
            return [[], []];
        }
        $boundary = '--' . ($m[1] !== '' ? $m[1] : $m[2]);

        $fieldPairs = [];
        $filePairs = [];
        $uploads = [];
        $pos = strpos($body, $boundary);
        while ($pos !== false) {
            $start = $pos + strlen($boundary);
            if (substr($body, $start, 2) === '--') {
                break; // closing delimiter
            }
            $start += strspn($body, " \t", $start);
            if (substr($body, $start, 2) === "\r\n") {
                $start += 2;
            }
            $next = strpos($body, "\r\n" . $boundary, $start);
            if ($next === false) {
                break; // truncated body: PHP drops the unfinished part as well
            }
            $part = substr($body, $start, $next - $start);
            $pos = $next + 2;

            $split = strpos($part, "\r\n\r\n");
            if ($split === false) {
                continue;
            }
            $headers = self::headers(substr($part, 0, $split));
            $data = substr($part, $split + 4);
            $disposition = $headers['content-disposition'] ?? '';
            $name = self::param($disposition, 'name');
            if ($name === null || $name === '') {
                continue;
            }
            $filename = self::param($disposition, 'filename');
            if ($filename === null) {
                $fieldPairs[] = rawurlencode($name) . '=' . rawurlencode($data);
                continue;
            }
            if ($filename === '' && $data === '') {
                continue; // an empty file input (UPLOAD_ERR_NO_FILE): absent, as under php-fpm
            }
            $index = count($uploads);
            $uploads[] = self::upload($filename, $headers['content-type'] ?? null, $data, $tempFiles);
            $filePairs[] = rawurlencode($name) . '=' . $index;
        }

        // parse_str() gives exactly PHP's nesting of `a[b][]` names.
        $fields = [];
        parse_str(implode('&', $fieldPairs), $fields);
        $files = [];
        parse_str(implode('&', $filePairs), $files);
        array_walk_recursive($files, static function (mixed &$leaf) use ($uploads): void {
            $leaf = $uploads[(int) $leaf];
        });

        return [$fields, $files];
    }

    /** @return array<string, string> lower-case name => value */
    private static function headers(string $block): array
    {
        $out = [];
        foreach (explode("\r\n", $block) as $line) {
            $colon = strpos($line, ':');
            if ($colon !== false) {
                $out[strtolower(trim(substr($line, 0, $colon)))] = trim(substr($line, $colon + 1));
            }
        }

        return $out;
    }

    /** A parameter of a Content-Disposition value (quoted or token), or null when absent. */
    private static function param(string $header, string $name): ?string
    {
        if (preg_match('/(?:^|;)\s*' . preg_quote($name, '/') . '\s*=\s*(?:"((?:[^"\\\\]|\\\\.)*)"|([^;]*))/i', $header, $m)) {
            return isset($m[2]) && $m[2] !== '' ? trim($m[2]) : (string) preg_replace('/\\\\(.)/s', '$1', $m[1]);
        }

        return null;
    }

    /** @param list<string> $tempFiles */
    private static function upload(string $filename, ?string $type, string $data, array &$tempFiles): UploadedFile
    {
        $tmp = tempnam(sys_get_temp_dir(), 'php');
        if ($tmp === false) {
            return new UploadedFile('', basename($filename), $type, UPLOAD_ERR_CANT_WRITE, true);
        }
        $tempFiles[] = $tmp;
        if (file_put_contents($tmp, $data) !== strlen($data)) {
            return new UploadedFile('', basename($filename), $type, UPLOAD_ERR_CANT_WRITE, true);
        }

        return new UploadedFile($tmp, basename($filename), $type, UPLOAD_ERR_OK, true);
    }
}
