<?php

namespace App\Models;

use Illuminate\Database\Eloquent\Model;

class Greeting extends Model
{
    public $timestamps = false;

    protected $fillable = ['message'];
}
