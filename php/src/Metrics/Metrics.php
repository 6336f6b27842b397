<?php

declare(strict_types=1);

namespace Forkline\Metrics;

use Forkline\RPC;
use Forkline\ServiceException;

/**
 * Client for the metrics.* RPC methods (JSON, spec §9.3), the API of spiral/roadrunner-metrics'
 * Spiral\RoadRunner\Metrics\Metrics over Forkline\RPC:
 *
 *     $metrics = new Metrics(RPC::create('tcp://127.0.0.1:6001'));
 *     $metrics->declare('orders', Collector::counter()->withHelp('Orders.')->withLabels('method'));
 *     $metrics->add('orders', 1, ['POST']);
 *
 * The collectors show up at metrics.address/metrics beside forkline's own (docs/metrics.md).
 * Server errors ("undefined collector N", "required labels for collector N", ...) become
 * MetricsException.
 */
final class Metrics
{
    private RPC $rpc;

    public function __construct(RPC $rpc)
    {
        $this->rpc = $rpc->withServicePrefix('metrics');
    }

    /** Counter or gauge. @param list<string> $labels label values, in the declared order */
    public function add(string $name, float $value, array $labels = []): void
    {
        $this->call('add', $name, $value, $labels);
    }

    /** Gauge only. */
    public function sub(string $name, float $value, array $labels = []): void
    {
        $this->call('sub', $name, $value, $labels);
    }

    /** Gauge only. */
    public function set(string $name, float $value, array $labels = []): void
    {
        $this->call('set', $name, $value, $labels);
    }

    /** Histogram or summary. */
    public function observe(string $name, float $value, array $labels = []): void
    {
        $this->call('observe', $name, $value, $labels);
    }

    /** Declaring a name that exists already does nothing (as upstream). */
    public function declare(string $name, Collector $collector): void
    {
        try {
            $this->rpc->call('declare', ['name' => $name, 'collector' => $collector->toArray()]);
        } catch (ServiceException $e) {
            if (str_contains($e->getMessage(), 'tried to register existing collector')) {
                return;
            }
            throw new MetricsException($e->getMessage(), (int) $e->getCode(), $e);
        }
    }

    public function unregister(string $name): void
    {
        try {
            $this->rpc->call('unregister', $name);
        } catch (ServiceException $e) {
            throw new MetricsException($e->getMessage(), (int) $e->getCode(), $e);
        }
    }

    /** @param list<string> $labels */
    private function call(string $method, string $name, float $value, array $labels): void
    {
        try {
            $this->rpc->call($method, ['name' => $name, 'value' => $value, 'labels' => array_values($labels)]);
        } catch (ServiceException $e) {
            throw new MetricsException($e->getMessage(), (int) $e->getCode(), $e);
        }
    }
}
