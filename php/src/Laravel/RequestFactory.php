<?php

declare(strict_types=1);

namespace Forkline\Laravel;

use Forkline\Http\Request as ForklineRequest;
use Illuminate\Http\Request;
use Illuminate\Http\UploadedFile;

/**
 * Builds the Illuminate\Http\Request that php-fpm's `Request::capture()` would build for the same
 * HTTP request: server vars (REQUEST_URI, HTTP_*, REMOTE_ADDR, ...), query, cookies, parsed body,
 * uploaded files and raw content.
 *
 * Forms arrive parsed from forkline (`parsed`, spec §6.4) and files as the `uploads` tree (§6.5).
 * When they arrive raw instead (`http.raw_body: true`, or a server that does not parse forms),
 * urlencoded and multipart bodies are parsed here, as PHP itself would; the temporary files that
 * takes are listed in $tempFiles and deleted by the bridge once the request is over.
 */
final class RequestFactory
{
    /** @var list<string> temporary upload files created for the current request */
    public array $tempFiles = [];

    /** @var array<string, string> server vars every request starts from */
    private array $baseServer;

    /** @var array<string, string> header name => server var name (HTTP_*), the names seen so far */
    private array $serverKeys = [];

    /** The last request's authority ("https://" in front for https) and its [host, port]. */
    private string $lastOrigin = '';

    /** @var array{0: string, 1: int} */
    private array $lastHostPort = ['localhost', 80];

    public function __construct(string $publicPath)
    {
        $script = rtrim($publicPath, '/') . '/index.php';
        // As under nginx + php-fpm with public/ as the document root: Symfony derives the base
        // URL ("" here) from SCRIPT_NAME and SCRIPT_FILENAME.
        $this->baseServer = [
            'DOCUMENT_ROOT' => rtrim($publicPath, '/'),
            'SCRIPT_FILENAME' => $script,
            'SCRIPT_NAME' => '/index.php',
            'PHP_SELF' => '/index.php',
            'SERVER_SOFTWARE' => 'forkline',
            'GATEWAY_INTERFACE' => 'CGI/1.1',
        ];
    }

    public function make(ForklineRequest $req): Request
    {
        $server = $this->server($req);
        $contentType = $server['CONTENT_TYPE'] ?? '';

        $post = [];
        $files = [];
        $content = $req->body;
        if ($req->parsed) {
            $post = $req->parsedBody ?? [];
            $content = ''; // the body was the form tree, not what the client sent
        } elseif ($req->body !== '' && $req->method !== 'GET' && $req->method !== 'HEAD') {
            if (stripos($contentType, 'application/x-www-form-urlencoded') !== false) {
                parse_str($req->body, $post);
            } elseif (stripos($contentType, 'multipart/form-data') !== false) {
                [$post, $files] = Multipart::parse($req->body, $contentType, $this->tempFiles);
                $content = ''; // php://input is empty for multipart under php-fpm too
            }
        }
        if ($req->uploads !== []) {
            $files = self::uploadedFiles($req->uploads);
        }

        $request = new Request($req->query, $post, [], $req->cookies, $files, $server, $content);
        // What Request::capture() (createFromBase()) does under php-fpm: the input source is the
        // JSON body, or for GET and HEAD the query itself (one bag: $request->post() reads the
        // query string, and the middleware that clean the input clean it once).
        if (str_contains($contentType, '/json') || str_contains($contentType, '+json')) {
            $request->request = $request->json();
        } elseif (($method = strtoupper($req->method)) === 'GET' || $method === 'HEAD') {
            $request->request = $request->query;
        }

        return $request;
    }

    /** @return array<string, string> */
    private function server(ForklineRequest $req): array
    {
        $server = $this->baseServer;
        $uri = $req->uri;
        $scheme = 'http';
        $authority = '';
        $target = $uri;
        if (($p = strpos($uri, '://')) !== false) {
            $scheme = strtolower(substr($uri, 0, $p));
            $slash = strpos($uri, '/', $p + 3);
            $authority = $slash === false ? substr($uri, $p + 3) : substr($uri, $p + 3, $slash - $p - 3);
            $target = $slash === false ? '/' : substr($uri, $slash);
        }
        if (($hash = strpos($target, '#')) !== false) {
            $target = substr($target, 0, $hash);
        }
        $https = $scheme === 'https';
        $origin = $https ? 'https://' . $authority : $authority;
        if ($origin !== $this->lastOrigin) {
            $this->lastOrigin = $origin;
            $this->lastHostPort = self::splitAuthority($authority, $https ? 443 : 80);
        }
        [$host, $port] = $this->lastHostPort;

        $now = microtime(true);
        $server['REQUEST_TIME_FLOAT'] = $now;
        $server['REQUEST_TIME'] = (int) $now;
        $server['SERVER_PROTOCOL'] = $req->protocol !== '' ? $req->protocol : 'HTTP/1.1';
        $server['REQUEST_METHOD'] = $req->method;
        $server['REQUEST_URI'] = $target;
        $server['QUERY_STRING'] = $req->rawQuery;
        $server['REMOTE_ADDR'] = (string) ($req->attributes['ipAddress'] ?? $req->remoteAddr);
        $server['SERVER_NAME'] = $host;
        $server['SERVER_PORT'] = (string) $port;
        if ($https) {
            $server['HTTPS'] = 'on';
        }
        if ($authority !== '') {
            $server['HTTP_HOST'] = $authority;
        }

        foreach ($req->headers as $name => $values) {
            $key = $this->serverKeys[$name] ?? $this->serverKey((string) $name);
            $server[$key] = count($values) === 1 ? $values[0] : implode(', ', $values);
        }
        if (!isset($server['CONTENT_LENGTH']) && $req->body !== '' && !$req->parsed) {
            $server['CONTENT_LENGTH'] = (string) strlen($req->body);
        }

        return $server;
    }

    /** CONTENT_TYPE, CONTENT_LENGTH or HTTP_* for a header name, remembered (a bounded set). */
    private function serverKey(string $name): string
    {
        $key = strtoupper(strtr($name, '-', '_'));
        $key = $key === 'CONTENT_TYPE' || $key === 'CONTENT_LENGTH' ? $key : 'HTTP_' . $key;
        if (count($this->serverKeys) >= 512) {
            $this->serverKeys = []; // clients that invent header names must not grow the worker
        }

        return $this->serverKeys[$name] = $key;
    }

    /** @return array{0: string, 1: int} host (brackets kept for IPv6) and port */
    private static function splitAuthority(string $authority, int $defaultPort): array
    {
        if ($authority === '') {
            return ['localhost', $defaultPort];
        }
        if (preg_match('/^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/', $authority, $m)) {
            return [$m[1], isset($m[2]) && $m[2] !== '' ? (int) $m[2] : $defaultPort];
        }

        return [$authority, $defaultPort];
    }

    /**
     * The uploads tree (leaves {name, mime, size, error, tmpName}) as UploadedFile objects
     * under the same keys. Illuminate's own class, in test mode: PHP's upload handling did not
     * create these files, so is_uploaded_file() is false for them; test mode makes isValid()
     * look at the error code only and move() use rename(). (A Symfony UploadedFile would be
     * converted by $request->file() into an Illuminate one without test mode: never valid.)
     *
     * @param array<array-key, mixed> $tree
     * @return array<array-key, mixed>
     */
    public static function uploadedFiles(array $tree): array
    {
        $out = [];
        foreach ($tree as $key => $node) {
            if (!is_array($node)) {
                continue;
            }
            if (array_key_exists('tmpName', $node) && array_key_exists('error', $node)) {
                $error = (int) $node['error'];
                if ($error === UPLOAD_ERR_NO_FILE) {
                    continue; // an empty file input: absent, as Symfony's FileBag makes it
                }
                $out[$key] = new UploadedFile(
                    $error === UPLOAD_ERR_OK ? (string) $node['tmpName'] : '',
                    (string) ($node['name'] ?? ''),
                    isset($node['mime']) && $node['mime'] !== '' ? (string) $node['mime'] : null,
                    $error,
                    true,
                );
            } else {
                $out[$key] = self::uploadedFiles($node);
            }
        }

        return array_is_list($tree) ? array_values($out) : $out;
    }
}
