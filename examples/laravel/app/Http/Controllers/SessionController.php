<?php

namespace App\Http\Controllers;

use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;
use Illuminate\Support\Facades\Cookie;

class SessionController extends Controller
{
    /**
     * GET /session[?name=X]: remembers `name` in the session, counts this visitor's requests in
     * the session, and sends the count back in an (encrypted) `visits` cookie as well.
     */
    public function __invoke(Request $request): JsonResponse
    {
        $session = $request->session();
        if ($request->query->has('name')) {
            $session->put('name', (string) $request->query('name'));
        }
        $count = (int) $session->get('count', 0) + 1;
        $session->put('count', $count);
        Cookie::queue('visits', (string) $count, 60);

        return response()->json([
            'name' => $session->get('name'),
            'count' => $count,
            'visits_cookie' => $request->cookie('visits'),
            'token' => $session->token(),
        ]);
    }
}
