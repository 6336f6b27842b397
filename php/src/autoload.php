<?php

declare(strict_types=1);

/*
 * Autoloader for the Forkline PHP worker library (no Composer needed).
 *
 *   require __DIR__ . '/path/to/php/src/autoload.php';
 *
 * Maps Forkline\Foo\Bar to php/src/Foo/Bar.php.
 */
spl_autoload_register(static function (string $class): void {
    $prefix = 'Forkline\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
