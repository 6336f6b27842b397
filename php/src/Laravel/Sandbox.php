<?php

declare(strict_types=1);

namespace Forkline\Laravel;

use Illuminate\Config\Repository;
use Illuminate\Contracts\Foundation\Application;
use Illuminate\Session\Store;
use Illuminate\Support\Facades\Facade;
use Illuminate\Support\Str;

/**
 * Request-scoped state, reset between requests the way Laravel Octane does it.
 *
 * After boot, every property of the application container (instances, bindings, resolved
 * flags, rebound/resolving callbacks, terminating callbacks, loaded providers, ...) is copied.
 * After each request they are all put back: whatever the request resolved or registered (the
 * request itself, scoped instances, a controller's singletons, listeners added to the
 * container) is forgotten, and memory stays flat. PHP arrays are copy-on-write, so taking and
 * restoring the copy costs a few dozen reference-count updates, not a walk of the container.
 *
 * Services resolved at boot are kept, and so are their objects' own properties: those that
 * carry per-request state are flushed here (queued cookies, auth guards, session data, the
 * database query log and open transactions, log context, the translator's locale) — the list
 * of Octane's listeners for Laravel's own services. Facades forget their resolved instances.
 */
final class Sandbox
{
    /** @var array<string, mixed> */
    private array $snapshot;

    private \Closure $restore;

    private string $locale;

    private int $requests = 0;

    /** The configuration repository as booted. */
    private object $config;

    /** @var array<array-key, mixed> its items as booted (`config([...])` at runtime changes them) */
    private array $configItems = [];

    /** Puts $configItems back into the repository; null when it is not Illuminate's. */
    private ?\Closure $restoreConfig = null;

    /** @var array<string, string> session driver name => the fresh id reset() gave its store */
    private array $sessionIds = [];

    /** Clears a session store's `started` flag. */
    private ?\Closure $unstart = null;

    public function __construct(private readonly Application $app)
    {
        $class = $app::class;
        $this->snapshot = (\Closure::bind(fn (): array => get_object_vars($this), $app, $class))();
        $this->restore = \Closure::bind(function (array $props): void {
            foreach ($props as $name => $value) {
                $this->$name = $value;
            }
        }, $app, $class);
        $this->config = $app['config'];
        $this->locale = (string) $this->config->get('app.locale', 'en');
        if ($this->config instanceof Repository) {
            $this->configItems = $this->config->all();
            $this->restoreConfig = \Closure::bind(function (array $items): void {
                $this->items = $items;
            }, $this->config, Repository::class);
        }
    }

    /**
     * Before a request. The configuration needs nothing: a request changes the one repository,
     * as under php-fpm, and reset() puts the booted items back (a copy per request would cost a
     * container rebinding each time, and services holding the repository would not see it).
     */
    public function prepare(): void
    {
        if ($this->restoreConfig === null) {
            $this->app->instance('config', clone $this->config); // not Illuminate's: a copy
        }
    }

    /** Names of the instances kept across requests (those resolved before the snapshot). */
    public function keptInstances(): array
    {
        return array_keys($this->snapshot['instances'] ?? []);
    }

    public function reset(): void
    {
        $this->flushServices();
        ($this->restore)($this->snapshot);
        // Identical arrays compare in O(1): the items are only put back when a request changed them.
        if ($this->restoreConfig !== null && $this->config->all() !== $this->configItems) {
            ($this->restoreConfig)($this->configItems);
        }
        if (method_exists($this->app, 'forgetScopedInstances')) {
            $this->app->forgetScopedInstances();
        }
        Facade::clearResolvedInstances();
    }

    /** Per-request state inside services that live across requests. */
    private function flushServices(): void
    {
        $kept = $this->snapshot['instances'] ?? [];

        if (isset($kept['cookie'])) {
            $kept['cookie']->flushQueuedCookies();
        }
        if (isset($kept['auth'])) {
            $kept['auth']->forgetGuards();
        }
        if (isset($kept['session'])) {
            // The store is shared: without this one visitor's data (and CSRF token) would be
            // merged into the next visitor's session when StartSession loads it. migrate()
            // gives it a fresh id and tells the handler the session does not exist yet (the
            // database handler would otherwise UPDATE the previous visitor's row). A store the
            // request did not use (no start, no data, still the id given here) is left as it
            // is: nothing of a visitor is in it, and a fresh id costs a getrandom() call.
            foreach ($kept['session']->getDrivers() as $name => $store) {
                if (!$store->isStarted() && $store->all() === []
                    && $store->getId() === ($this->sessionIds[$name] ?? null)) {
                    continue;
                }
                $store->flush();
                $store->migrate();
                if ($store instanceof Store) {
                    // not started, as a fresh process's store (save() does it, an exception may not)
                    $this->unstart ??= \Closure::bind(static fn (Store $s) => $s->started = false, null, Store::class);
                    ($this->unstart)($store);
                }
                $this->sessionIds[$name] = $store->getId();
            }
        }
        if (isset($kept['db'])) {
            foreach ($kept['db']->getConnections() as $connection) {
                $connection->flushQueryLog();
                // A request that died inside a transaction must not leave it open for the next.
                while ($connection->transactionLevel() > 0) {
                    $connection->rollBack();
                }
            }
        }
        if (isset($kept['log']) && method_exists($kept['log'], 'getChannels')) {
            foreach ($kept['log']->getChannels() as $channel) {
                if (method_exists($channel, 'withoutContext')) {
                    $channel->withoutContext();
                }
            }
        }
        if (isset($kept['translator']) && $kept['translator']->getLocale() !== $this->locale) {
            $kept['translator']->setLocale($this->locale);
        }
        // Str's snake/camel/studly caches grow with every distinct string: drop them now and
        // then (not every request: Eloquent's attribute access leans on them).
        if (++$this->requests % 1000 === 0 && method_exists(Str::class, 'flushCache')) {
            Str::flushCache();
        }
    }
}
