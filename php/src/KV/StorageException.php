<?php

declare(strict_types=1);

namespace Forkline\KV;

/** The storage is not configured in the server's `kv` section ("no such storage"). */
class StorageException extends KVException
{
}
