/* Process titles as ps shows them ("forkline: master", "forkline: reactor 0"), nginx style:
 * the argv area is reused, the environment moved out of its way first. */
#ifndef FL_PROCTITLE_H
#define FL_PROCTITLE_H
void fl_proctitle_init(int argc, char **argv);
void fl_proctitle_set(const char *title);
#endif
