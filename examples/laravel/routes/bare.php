<?php

use App\Http\Controllers\GreetingController;
use App\Http\Controllers\HelloController;
use App\Http\Controllers\UploadController;
use Illuminate\Support\Facades\Route;

/*
 * Routes without a middleware group: only the kernel's global middleware runs.
 */

Route::get('/', function () {
    return response("Hello from Laravel\n")->header('Content-Type', 'text/plain; charset=UTF-8');
});

Route::get('/json', [HelloController::class, 'json']);

Route::get('/db', [GreetingController::class, 'show']);

Route::post('/upload', [UploadController::class, 'store']);

// A streamed response: three chunks, each flushed as it is produced.
Route::get('/stream', function () {
    return response()->stream(function () {
        foreach (['one', 'two', 'three'] as $word) {
            echo "chunk $word\n";
            ob_flush();
            flush();
        }
    }, 200, ['Content-Type' => 'text/plain; charset=UTF-8']);
});

// Which PHP process answered (the tests use it to follow one worker).
Route::get('/pid', function () {
    return response((string) getmypid())->header('Content-Type', 'text/plain; charset=UTF-8');
});

// PHP heap in use by this process (the tests check it stays flat from one request to the next).
Route::get('/memory', function () {
    return response((string) memory_get_usage())->header('Content-Type', 'text/plain; charset=UTF-8');
});

// An exception: Laravel's exception handler answers 500 and the process carries on.
Route::get('/throw', function () {
    throw new RuntimeException('thrown on purpose by /throw');
});

// A fatal error (memory exhausted): ends the PHP process that runs it, nothing else.
Route::get('/fatal', function () {
    ini_set('memory_limit', '32M');

    return response(str_repeat('x', 64 << 20));
});
