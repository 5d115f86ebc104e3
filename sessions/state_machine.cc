#include "sessions/state_machine.h"
