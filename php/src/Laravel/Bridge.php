<?php

declare(strict_types=1);

namespace Forkline\Laravel;

use Forkline\Http\Request as ForklineRequest;
use Forkline\HttpWorker;
use Forkline\RelayException;
use Illuminate\Contracts\Debug\ExceptionHandler;
use Illuminate\Contracts\Foundation\Application;
use Illuminate\Contracts\Http\Kernel;
use Illuminate\Http\Request;
use Symfony\Component\HttpFoundation\Response;

/**
 * A persistent Laravel worker: boots the application once, then serves forkline requests in a
 * loop through the HTTP kernel, resetting request-scoped state after each one.
 *
 *   require '/path/to/forkline/php/src/autoload.php';
 *   require __DIR__ . '/bootstrap/autoload.php';          // the app's autoloader
 *   exit(Forkline\Laravel\Bridge::boot(__DIR__)->run());
 *
 * An exception the app throws is answered by Laravel's exception handler (a 500 page, and a
 * report to the app's log), and the worker keeps serving. A fatal error ends only this process;
 * the server answers that one request with its internal error and starts a new worker.
 *
 * Do not load `route:cache` in a persistent worker: Laravel 8 rebuilds route objects from it on
 * every request (and leaks doing so). Routes are registered once at boot here anyway.
 */
final class Bridge
{
    /**
     * Services resolved at boot and kept across requests: Octane's default warm list (minus
     * `auth`, which is rebuilt per request), plus the redirector and response factory that
     * Laravel's `response()` helper builds on every request, the controller dispatcher, the
     * StartSession middleware (a singleton holding only the session manager) and the Date
     * facade's factory (`date`: stateless, Carbon's settings are static). Rebuilding these on
     * every request cost 11-13 µs of a 95 µs request. Sandbox::reset() flushes the per-request
     * state they hold (session data and id, queued cookies).
     */
    public const WARM = [
        'cache', 'cache.store', 'config', 'cookie', 'db', 'db.factory', 'encrypter', 'files',
        'hash', 'log', 'router', 'routes', 'session', 'session.store', 'translator', 'url', 'view',
        'redirect', \Illuminate\Contracts\Routing\ResponseFactory::class,
        \Illuminate\Routing\Contracts\ControllerDispatcher::class,
        \Illuminate\Session\Middleware\StartSession::class, 'date',
    ];

    private readonly Kernel $kernel;

    private readonly Sandbox $sandbox;

    private readonly RequestFactory $requests;

    private readonly ResponseSender $responses;

    private int $served = 0;

    /**
     * @param list<string> $warm container abstracts to resolve at boot (kept across requests)
     */
    public function __construct(
        private readonly Application $app,
        private readonly HttpWorker $http,
        array $warm = self::WARM,
    ) {
        $this->kernel = $app->make(Kernel::class);
        // A placeholder request for boot: service providers may look at it, as they do under
        // php-fpm, where the kernel binds the real one before bootstrapping.
        $app->instance('request', Request::create('http://localhost/'));
        $this->kernel->bootstrap();
        // Deferred providers load now rather than on first use in a request: the state reset
        // would otherwise unload them and the next request would register them again.
        if (method_exists($app, 'loadDeferredProviders')) {
            $app->loadDeferredProviders();
        }
        foreach ($warm as $abstract) {
            if ($app->bound($abstract)) {
                $app->make($abstract);
            }
        }
        $app->make(ExceptionHandler::class);
        // The Date facade (session and cookie expiry) registers its factory as the `date`
        // instance on first use; registered now, it is kept rather than rebuilt per request.
        if (in_array('date', $warm, true) && class_exists(\Illuminate\Support\Facades\Date::class)) {
            \Illuminate\Support\Facades\Date::getFacadeRoot();
        }
        Request::enableHttpMethodParameterOverride();

        $this->requests = new RequestFactory($app->publicPath());
        $this->responses = new ResponseSender($http, fn (\Throwable $e) => $this->report($e));
        $this->sandbox = new Sandbox($app);
    }

    /**
     * Boot the application at $basePath (its bootstrap/app.php) on the RR_RELAY relay.
     *
     * @param list<string> $warm
     */
    public static function boot(string $basePath, ?HttpWorker $http = null, array $warm = self::WARM): self
    {
        // Requests are HTTP requests, not console commands: Laravel picks its HTTP paths
        // (error pages, providers' web-only setup) from this, as under php-fpm.
        $_SERVER['APP_RUNNING_IN_CONSOLE'] = $_ENV['APP_RUNNING_IN_CONSOLE'] = 'false';
        $http ??= HttpWorker::create(); // before the app boots: echo goes to stderr from here on
        $app = require rtrim($basePath, '/') . '/bootstrap/app.php';

        return new self($app, $http, $warm);
    }

    public function application(): Application
    {
        return $this->app;
    }

    public function sandbox(): Sandbox
    {
        return $this->sandbox;
    }

    /** Serve until the server stops the worker. Returns the process exit code. */
    public function run(): int
    {
        while (true) {
            try {
                $req = $this->http->waitRequest();
            } catch (RelayException $e) {
                if ($e->isClosed()) {
                    return 0; // the server closed the relay without a stop frame
                }
                $this->log('relay error: ' . $e->getMessage());

                return 1;
            }
            if ($req === null) {
                return 0; // stop requested
            }
            try {
                $this->handle($req);
            } catch (RelayException $e) {
                $this->log('relay error: ' . $e->getMessage());

                return 1;
            }
        }
    }

    /** One request: build it, run the kernel, send the response, terminate, reset. */
    public function handle(ForklineRequest $req): void
    {
        $request = null;
        $response = null;
        $this->sandbox->prepare();
        try {
            $request = $this->requests->make($req);
            $response = $this->runKernel($request, $echoed);
            $this->responses->send($response, $request->getMethod(), $echoed);
        } catch (RelayException $e) {
            throw $e;
        } catch (\Throwable $e) {
            // Outside the kernel's own try (building the request, sending the response).
            $this->report($e);
            $this->sendError($request, $e);
        }

        try {
            if ($request !== null && $response !== null) {
                $this->kernel->terminate($request, $response);
            }
        } catch (\Throwable $e) {
            $this->report($e);
        } finally {
            foreach ($this->requests->tempFiles as $file) {
                @unlink($file);
            }
            $this->requests->tempFiles = [];
            $this->sandbox->reset();
            $this->served++;
        }
    }

    /** Requests served by this worker so far. */
    public function served(): int
    {
        return $this->served;
    }

    private function runKernel(Request $request, ?string &$echoed): Response
    {
        $level = ob_get_level();
        ob_start();
        try {
            return $this->kernel->handle($request);
        } finally {
            $echoed = '';
            while (ob_get_level() > $level) {
                $echoed = (string) ob_get_clean() . $echoed;
            }
        }
    }

    private function sendError(?Request $request, \Throwable $e): void
    {
        try {
            $handler = $this->app->make(ExceptionHandler::class);
            $response = $handler->render($request ?? Request::create('http://localhost/'), $e);
            $this->responses->send($response, $request?->getMethod() ?? 'GET');
        } catch (RelayException $relay) {
            throw $relay;
        } catch (\Throwable) {
            $this->http->error('Internal Server Error');
        }
    }

    private function report(\Throwable $e): void
    {
        try {
            $this->app->make(ExceptionHandler::class)->report($e);
        } catch (\Throwable) {
            $this->log($e::class . ': ' . $e->getMessage() . ' in ' . $e->getFile() . ':' . $e->getLine());
        }
    }

    private function log(string $message): void
    {
        fwrite(STDERR, 'laravel worker ' . getmypid() . ': ' . $message . "\n");
    }
}
