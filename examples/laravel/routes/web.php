<?php

use App\Http\Controllers\SessionController;
use Illuminate\Support\Facades\Route;

/*
 * Routes in the `web` middleware group: encrypted cookies, session, CSRF protection.
 */

Route::get('/web', function () {
    return response("Hello from Laravel\n")->header('Content-Type', 'text/plain; charset=UTF-8');
});

Route::get('/session', SessionController::class);
