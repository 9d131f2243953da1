// Out-of-line anchor for the Component vtable.
#include "neat/components/component.hpp"
