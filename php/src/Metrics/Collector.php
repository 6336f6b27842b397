<?php

declare(strict_types=1);

namespace Forkline\Metrics;

/**
 * A collector description for Metrics::declare(), as spiral/roadrunner-metrics' Collector:
 *
 *     Collector::counter()->withHelp('Orders placed.')->withLabels('method', 'status');
 *     Collector::histogram(0.1, 0.5, 1.0)->withNamespace('app');
 *     Collector::summary([0.5 => 0.05, 0.99 => 0.001]);
 *
 * Immutable: every with*() returns a copy.
 */
final class Collector
{
    public string $namespace = '';
    public string $subsystem = '';
    public string $help = '';
    /** @var list<string> */
    public array $labels = [];
    /** @var list<float> */
    public array $buckets = [];
    /** @var array<string, float> quantile => allowed error */
    public array $objectives = [];

    private function __construct(public readonly string $type)
    {
    }

    public static function counter(): self
    {
        return new self('counter');
    }

    public static function gauge(): self
    {
        return new self('gauge');
    }

    public static function histogram(float ...$buckets): self
    {
        $c = new self('histogram');
        $c->buckets = array_values($buckets);

        return $c;
    }

    /** @param array<int|float|string, float> $objectives quantile => allowed error */
    public static function summary(array $objectives = []): self
    {
        $c = new self('summary');
        foreach ($objectives as $q => $err) {
            $c->objectives[(string) $q] = (float) $err;
        }

        return $c;
    }

    public function withNamespace(string $namespace): self
    {
        $c = clone $this;
        $c->namespace = $namespace;

        return $c;
    }

    public function withSubsystem(string $subsystem): self
    {
        $c = clone $this;
        $c->subsystem = $subsystem;

        return $c;
    }

    public function withHelp(string $help): self
    {
        $c = clone $this;
        $c->help = $help;

        return $c;
    }

    public function withLabels(string ...$labels): self
    {
        $c = clone $this;
        $c->labels = array_values($labels);

        return $c;
    }

    /** The `collector` object of metrics.Declare (spec §9.3). */
    public function toArray(): array
    {
        $a = [
            'namespace' => $this->namespace,
            'subsystem' => $this->subsystem,
            'type' => $this->type,
            'help' => $this->help,
            'labels' => $this->labels,
            'buckets' => $this->buckets,
        ];
        if ($this->type === 'summary' && $this->objectives !== []) {
            $a['objectives'] = $this->objectives;
        }

        return $a;
    }
}
