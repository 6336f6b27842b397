/* The application logger over RPC (spec §9.3 app): app.Error|Warning|Info|Debug (a JSON string),
 * app.Log (raw to stderr), and the *WithContext forms (applogger.v1.LogEntry, proto) whose
 * attributes become structured fields of forkline's log line under the logger "app". */
#ifndef FL_APPLOG_H
#define FL_APPLOG_H

#include "rpc.h"

int fl_applog_register(fl_rpc_server_t *rpc);

#endif
